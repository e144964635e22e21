""" Resolution-private BN: each branch must behave exactly like an independent norm of the same kind."""
import copy

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d
import timm
from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d, SyncBatchNormAct, convert_sync_batchnorm

from timm_drnet import ResolutionBatchNorm, convert_resolution_bn, resolution_norms, select_resolution_bn, \
    set_active_resolution

C = 6


def _randomise(norm: nn.Module) -> nn.Module:
    """Give a norm non-trivial statistics and affine parameters."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(C, generator=g))
        norm.running_var.copy_(torch.rand(C, generator=g) + 0.5)
        norm.weight.copy_(torch.randn(C, generator=g))
        norm.bias.copy_(torch.randn(C, generator=g))
    return norm


NORMS = {
    'bn': lambda: nn.BatchNorm2d(C),
    'bn_act': lambda: BatchNormAct2d(C, act_layer=nn.ReLU, drop_layer=lambda: nn.Dropout(0.5)),
    'sync_bn': lambda: nn.SyncBatchNorm(C),
    'sync_bn_act': lambda: convert_sync_batchnorm(BatchNormAct2d(C, act_layer=nn.SiLU)),
    'frozen_bn': lambda: FrozenBatchNorm2d(C),
    'frozen_bn_act': lambda: FrozenBatchNormAct2d(C, act_layer=nn.ReLU),
}


@pytest.mark.parametrize('kind', list(NORMS))
@pytest.mark.parametrize('training', [True, False])
def test_branch_matches_independent_norm(kind, training):
    original = _randomise(NORMS[kind]())
    wrapped = ResolutionBatchNorm(copy.deepcopy(original), 3)
    references = [copy.deepcopy(original) for _ in range(3)]
    wrapped.train(training)
    for ref in references:
        ref.train(training)
    for step, j in enumerate([1, 0, 1, 2]):
        x = torch.randn(4, C, 5, 5, generator=torch.Generator().manual_seed(step), requires_grad=True)
        x_ref = x.detach().clone().requires_grad_(True)
        wrapped.active = j
        torch.manual_seed(step)  # same dropout mask for both
        out = wrapped(x)
        torch.manual_seed(step)
        out_ref = references[j](x_ref)
        torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
        out.pow(2).sum().backward()
        out_ref.pow(2).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad)
        for k in range(3):  # every branch's buffers and params track its own reference only
            for (name, a), b in zip(wrapped.branches[k].state_dict().items(), references[k].state_dict().values()):
                torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f'branch {k} {name}')
        for p, p_ref in zip(wrapped.branches[j].parameters(), references[j].parameters()):
            torch.testing.assert_close(p.grad, p_ref.grad)
    assert type(wrapped.branches[0]) is type(original)


def test_bn_act_keeps_activation_and_drop():
    original = BatchNormAct2d(C, act_layer=nn.ReLU, drop_layer=lambda: nn.Dropout(0.3))
    wrapped = ResolutionBatchNorm(original, 2)
    for branch in wrapped.branches:
        assert isinstance(branch.act, nn.ReLU)
        assert isinstance(branch.drop, nn.Dropout) and branch.drop.p == 0.3


def test_running_stats_move_only_for_active_branch():
    wrapped = ResolutionBatchNorm(nn.BatchNorm2d(C), 3).train()
    before = [copy.deepcopy(b.state_dict()) for b in wrapped.branches]
    wrapped.active = 2
    wrapped(torch.randn(8, C, 4, 4) * 3 + 1)
    for k in (0, 1):
        for name, value in wrapped.branches[k].state_dict().items():
            assert torch.equal(value, before[k][name]), name
    assert not torch.equal(wrapped.branches[2].running_mean, before[2]['running_mean'])
    assert wrapped.branches[2].num_batches_tracked.item() == 1


FAMILIES = ['resnet18', 'tf_efficientnet_lite0', 'mobilenetv3_small_050', 'regnetx_002', 'convnext_atto']


def _perturb(module: nn.Module, j: int) -> None:
    """Affine weights and statistics of their own for every batch norm under ``module`` (different for each j)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.mul_(1 + 0.2 * j)
                m.bias.add_(0.1 * j)
                m.running_mean.add_(0.1 * j)


@pytest.mark.parametrize('name', FAMILIES)
def test_converter_on_timm_families(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=4).eval()
    n_bn = sum(1 for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    converted = convert_resolution_bn(copy.deepcopy(model), 3).eval()
    norms = resolution_norms(converted)
    assert len(norms) == n_bn  # every BN, shortcut / downsample ones included
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(m is b for n in norms for b in n.branches)
                   for m in converted.modules())
    for j in range(3):  # branch j > 0 made to differ: it must compute what the plain model with its norms does
        if j:
            for norm in norms:
                _perturb(norm.branches[j], j)
        plain = copy.deepcopy(model)
        if j:
            _perturb(plain, j)
        set_active_resolution(converted, j)
        with torch.no_grad():
            torch.testing.assert_close(converted(x), plain(x))
            if j and n_bn:
                assert not torch.allclose(converted(x), ref), f'branch {j} must differ from branch 0'
    set_active_resolution(converted, 0)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), ref)
    if name == 'convnext_atto':  # LayerNorm model: nothing to convert, unchanged
        assert n_bn == 0
    if name == 'resnet18':
        assert isinstance(converted.layer2[0].downsample[1], ResolutionBatchNorm)
    if name == 'tf_efficientnet_lite0':
        assert all(isinstance(n.branches[0], BatchNormAct2d) for n in norms)
    back = select_resolution_bn(converted, 0)
    assert not resolution_norms(back)
    with torch.no_grad():
        torch.testing.assert_close(back(x), ref)


def test_convert_sync_batchnorm_converts_each_branch():
    model = convert_resolution_bn(timm.create_model('tf_efficientnet_lite0', num_classes=3), 2)
    model = convert_sync_batchnorm(model)
    norms = resolution_norms(model)
    assert norms, 'wrapper must survive convert_sync_batchnorm'
    for norm in norms:
        for branch in norm.branches:
            assert isinstance(branch, (nn.SyncBatchNorm, SyncBatchNormAct))
        assert isinstance(norm.branches[0], SyncBatchNormAct)  # fused act kept


def test_convert_twice_is_an_error():
    model = convert_resolution_bn(nn.Sequential(nn.Conv2d(3, C, 1), nn.BatchNorm2d(C)), 2)
    with pytest.raises(ValueError, match='only once'):
        convert_resolution_bn(model, 2)


def test_set_active_out_of_range():
    model = convert_resolution_bn(nn.Sequential(nn.BatchNorm2d(C)), 2)
    with pytest.raises(IndexError, match='out of range'):
        set_active_resolution(model, 2)

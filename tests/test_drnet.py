""" The DRNet module: routing, batch split / scatter, gradients, fixed-resolution path, timm API."""
import copy

import pytest
import torch
from torch import nn
import torch.nn.functional as F
import timm
from timm.layers import convert_sync_batchnorm

from timm_drnet import DRNet, ResolutionBatchNorm, create_drnet, select_resolution_bn
from timm_drnet.routing import gumbel_straight_through

SIZE = 96
SIZES = [96, 72, 48]


def tiny(backbone='resnet18', **kwargs) -> DRNet:
    """A small DRNet whose (random) predictor routes in eval as a trained one would."""
    kwargs.setdefault('predictor', 'mobile')
    model = timm.create_model('drnet', backbone=backbone, num_classes=5, **kwargs)
    model.mark_predictor_trained()
    return model


def hand_resize(x, size):
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode='bilinear', antialias=True)


def plain_backbone(model: DRNet, j: int) -> nn.Module:
    """An ordinary timm model holding branch j's norms: the independent reference."""
    return select_resolution_bn(copy.deepcopy(model.backbone), j)


def force_routes(model: DRNet, routes):
    """Make the predictor choose ``routes`` (one index per image); the split / scatter is under test."""
    logits = F.one_hot(torch.tensor(routes), model.num_resolutions).float() * 10.

    def scores(x, bias):
        assert x.shape[0] == len(routes)
        return logits
    model._predictor_scores = scores  # what the routing's selection scores


@pytest.fixture
def warm_model():
    """A tiny DRNet whose three BN branches hold different statistics."""
    model = tiny()
    model.train()
    with torch.no_grad():
        for j in range(3):
            for _ in range(2):
                model(torch.randn(8, 3, SIZE, SIZE) * (j + 1) + j, resolution_index=j)
    return model.eval()


def test_scatter_equals_each_image_alone(warm_model):
    routes = [2, 0, 1, 1, 2, 0, 2]
    x = torch.randn(len(routes), 3, SIZE, SIZE)
    force_routes(warm_model, routes)
    with torch.no_grad():
        out = warm_model.forward_routed(x)
        assert out.resolution_index.tolist() == routes
        for i, j in enumerate(routes):
            size = SIZES[j]
            ref = plain_backbone(warm_model, j).eval()(hand_resize(x[i:i + 1], size))
            torch.testing.assert_close(out.logits[i:i + 1], ref, rtol=1e-4, atol=1e-5)


def test_forward_prepared_answers_as_each_image_alone(warm_model):
    """Fed the predictor's small images and each route's images made beforehand, ``forward_prepared`` routes as
    ``forward_routed`` does on the full-size batch, asks once per resolution for the images routed there, and answers
    each image with the plain backbone of its route; a cascade asks each level for the images still going."""
    model, x = warm_model, torch.randn(9, 3, SIZE, SIZE)
    small = hand_resize(x, model.predictor_size)
    at_size = [hand_resize(x, size) for size in SIZES]
    asked = []

    def images_at(j, chosen):
        asked.append((j, chosen.tolist()))
        return at_size[j][chosen]
    with torch.no_grad():
        model.resolution_bias.copy_(-model.predict_logits(x, bias=False).mean(0))  # routes spread over the three
        ref = model.forward_routed(x)
        out = model.forward_prepared(small, images_at, input_size=(3, SIZE, SIZE))
        routes = out.resolution_index.tolist()
        assert routes == ref.resolution_index.tolist() and len(set(routes)) > 1
        torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.probs, ref.probs)
        torch.testing.assert_close(out.cost, ref.cost)
        assert sorted(asked) == [(j, [i for i, r in enumerate(routes) if r == j]) for j in sorted(set(routes))]
        for i, j in enumerate(routes):
            alone = plain_backbone(model, j).eval()(hand_resize(x[i:i + 1], SIZES[j]))
            torch.testing.assert_close(out.logits[i:i + 1], alone, rtol=1e-4, atol=1e-5)
        empty = model.forward_prepared(small[:0], images_at, input_size=(3, SIZE, SIZE))
        assert empty.logits.shape == (0, 5) and empty.resolution_index.shape == (0,)

        points = model(x, resolution_index=2).softmax(-1).amax(-1).sort().values
        model.set_cascade(((points[3] + points[4]) / 2).item(), levels=(2, 0))  # 5 of 9 images stop at 48 px
        asked.clear()
        try:
            ref = model.forward_routed(x)
            out = model.forward_prepared(small, images_at, input_size=(3, SIZE, SIZE))
        finally:
            model.set_cascade(None)
    assert out.resolution_index.tolist() == ref.resolution_index.tolist()
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.cost, ref.cost)
    going = [i for i, r in enumerate(ref.resolution_index.tolist()) if r == 0]
    assert len(going) == 4 and asked == [(2, list(range(9))), (0, going)]


def test_forward_prepared_names_bad_inputs(warm_model):
    small, images = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 72, 72)
    with pytest.raises(ValueError, match=r"small \(the predictor's input\) must be shaped \(B, 3, 64, 64\), "
                                         r"got \(2, 3, 96"):
        warm_model.forward_prepared(torch.randn(2, 3, SIZE, SIZE), lambda j, c: images, input_size=(3, SIZE, SIZE))
    with pytest.raises(TypeError, match='torch.Tensor'):
        warm_model.forward_prepared(small.numpy(), lambda j, c: images, input_size=(3, SIZE, SIZE))
    force_routes(warm_model, [2, 2])
    with pytest.raises(ValueError, match=r"images_at\(2, chosen\) \(candidate 2's images\) must be shaped "
                                         r"\(2, 3, 48, 48\), got \(2, 3, 72, 72\)"):
        warm_model.forward_prepared(small, lambda j, c: images, input_size=(3, SIZE, SIZE))
    with pytest.raises(RuntimeError, match='model.eval'):
        warm_model.train().forward_prepared(small, lambda j, c: images)


@pytest.mark.parametrize('j', [0, 1, 2])
def test_uniform_batch_equals_plain_backbone(warm_model, j):
    x = torch.randn(6, 3, SIZE, SIZE)
    with torch.no_grad():
        warm_model.resolution_bias[j] = 100.  # every image picks j
        out = warm_model.forward_routed(x)
        assert (out.resolution_index == j).all()
        ref = plain_backbone(warm_model, j).eval()(hand_resize(x, SIZES[j]))
    torch.testing.assert_close(out.logits, ref, rtol=0, atol=0)
    torch.testing.assert_close(warm_model(x, resolution_index=j), ref, rtol=0, atol=0)


def test_unused_branches_get_zero_gradient():
    model = tiny().train()
    force_routes(model, [0, 0, 2])  # resolution 1 gets no image
    out = model(torch.randn(3, 3, SIZE, SIZE))
    out.mean().backward()
    missing = [n for n, p in model.backbone.named_parameters() if p.grad is None]
    assert not missing
    unused = [p.grad for n, p in model.named_parameters() if '.branches.1.' in n]
    assert unused and all(torch.count_nonzero(g) == 0 for g in unused)


def test_gradient_reaches_predictor_through_hard_weight():
    model = tiny().train()
    x = torch.randn(4, 3, SIZE, SIZE)
    target = torch.tensor([0, 1, 2, 3])
    F.cross_entropy(model(x), target).backward()
    grads = [p.grad for p in model.predictor.parameters()]
    assert all(g is not None for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize('predictor_grad', ['routed', 'all'])
def test_predictor_gradient_equals_hand_mixture(predictor_grad):
    """The predictor's gradient equals that of sum_j h_j z_j over every resolution ('all') or only the chosen one
    ('routed'), with h from torch's own gumbel_softmax and z_j from plain backbones on hand-resized images."""
    torch.manual_seed(0)
    model = tiny(predictor_grad=predictor_grad).train()
    model.backbone.eval()  # fixed BN statistics: every z_j is a deterministic reference
    x, target = torch.randn(8, 3, SIZE, SIZE), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    params = list(model.predictor.parameters())
    torch.manual_seed(1)
    out = model.forward_routed(x)
    grads = torch.autograd.grad(F.cross_entropy(out.logits, target), params)

    torch.manual_seed(1)
    hard = F.gumbel_softmax(model.predict_logits(x), tau=model.tau, hard=True)
    with torch.no_grad():
        z = torch.stack([plain_backbone(model, j).eval()(hand_resize(x, SIZES[j])) for j in range(3)], 1)
    chosen = F.one_hot(hard.detach().argmax(1), 3).float()
    weights = hard if predictor_grad == 'all' else hard * chosen
    ref = (weights.unsqueeze(-1) * z).sum(1)
    ref_grads = torch.autograd.grad(F.cross_entropy(ref, target), params)
    assert torch.equal(out.resolution_index, hard.argmax(1))
    assert len(set(out.resolution_index.tolist())) > 1, 'the test needs images at several resolutions'
    assert torch.allclose(out.logits, ref, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize('noise', [False, True])
def test_selection_without_gradient_is_torch_gumbel_softmax(noise):
    """Without a gradient to carry, the selection is the one-hot of torch's own (Gumbel-)softmax choice, exactly
    0 / 1; with one, the straight-through gradient is torch's gumbel_softmax's."""
    logits = torch.randn(64, 3) * 3
    torch.manual_seed(2)
    expected = F.one_hot((F.gumbel_softmax(logits, tau=0.7, hard=True) if noise else logits).argmax(-1), 3).float()
    for context in (torch.no_grad, torch.inference_mode):
        torch.manual_seed(2)
        with context():
            hard = gumbel_straight_through(logits, tau=0.7, noise=noise)
        assert torch.equal(hard, expected) and hard.grad_fn is None
    leaf, ref_leaf = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    torch.manual_seed(2)
    (gumbel_straight_through(leaf, tau=0.7) * torch.arange(3.)).sum().backward()
    torch.manual_seed(2)
    (F.gumbel_softmax(ref_leaf, tau=0.7, hard=True) * torch.arange(3.)).sum().backward()
    torch.testing.assert_close(leaf.grad, ref_leaf.grad)


def test_predictor_grad_all_keeps_outputs_stats_and_backbone_gradients():
    """The extra resolutions change the predictor's gradient only: same logits, BN statistics, backbone grads."""
    torch.manual_seed(0)
    routed = tiny().train()
    every = copy.deepcopy(routed)
    every.predictor_grad = 'all'
    x, target = torch.randn(8, 3, SIZE, SIZE), torch.randint(0, 5, (8,))
    outs = []
    for model in (routed, every):
        torch.manual_seed(1)
        out = model(x)
        F.cross_entropy(out, target).backward()
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    for (name, a), b in zip(routed.backbone.named_buffers(), every.backbone.buffers()):
        assert torch.equal(a, b), name
    for (name, a), b in zip(routed.backbone.named_parameters(), every.backbone.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name
    assert any(not torch.allclose(a.grad, b.grad) for a, b in zip(routed.predictor.parameters(),
                                                                   every.predictor.parameters()))
    assert all(m.training for m in every.modules()), 'train mode must be restored after the extra passes'


def test_hard_weight_is_exactly_one_forward():
    model = tiny().train()
    out = model.forward_routed(torch.randn(5, 3, SIZE, SIZE))
    assert torch.equal(out.hard.detach().sum(1), torch.ones(5))
    assert set(out.hard.detach().flatten().tolist()) <= {0., 1.}


def test_eval_is_deterministic_and_train_samples():
    model = tiny().eval()
    x = torch.randn(16, 3, SIZE, SIZE)
    with torch.no_grad():
        a, b = model.forward_routed(x), model.forward_routed(x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.resolution_index, b.resolution_index)
    assert torch.equal(a.resolution_index, a.probs.argmax(1))
    model.train()
    picks = torch.stack([model.forward_routed(x).resolution_index for _ in range(5)])
    assert (picks != picks[0]).any(), 'Gumbel sampling in training should vary the routes'


def test_eval_gumbel_option_samples():
    model = tiny(eval_gumbel=True).eval()
    x = torch.randn(16, 3, SIZE, SIZE)
    with torch.no_grad():
        picks = torch.stack([model.forward_routed(x).resolution_index for _ in range(5)])
    assert (picks != picks[0]).any()


def test_batch_of_one_and_empty_resolution():
    model = tiny().train()
    model(torch.randn(1, 3, SIZE, SIZE)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        force_routes(model, [1])
        assert model(torch.randn(1, 3, SIZE, SIZE)).shape == (1, 5)
        force_routes(model, [0, 2, 2])
        assert model(torch.randn(3, 3, SIZE, SIZE)).shape == (3, 5)


def test_empty_batch_returns_empty_logits():
    model = tiny().eval()
    with torch.no_grad():
        out = model.forward_routed(torch.randn(0, 3, SIZE, SIZE))
    assert out.logits.shape == (0, 5) and out.resolution_index.shape == (0,) and out.cost.shape == (0,)


def test_branch_stats_move_only_for_chosen_resolution():
    model = tiny().train()
    norm = next(m for m in model.backbone.modules() if isinstance(m, ResolutionBatchNorm))
    before = [b.running_mean.clone() for b in norm.branches]
    force_routes(model, [2, 2, 2, 2])
    model(torch.randn(4, 3, SIZE, SIZE))
    assert torch.equal(norm.branches[0].running_mean, before[0])
    assert torch.equal(norm.branches[1].running_mean, before[1])
    assert not torch.equal(norm.branches[2].running_mean, before[2])


def test_routing_record_costs_include_predictor():
    model = tiny().eval()
    with torch.no_grad():
        out = model.forward_routed(torch.randn(4, 3, SIZE, SIZE))
    table = model.cost_table((3, SIZE, SIZE))
    expected = torch.tensor([table.backbone[j] + table.predictor for j in out.resolution_index.tolist()])
    torch.testing.assert_close(out.cost, expected)
    torch.testing.assert_close(out.probs.sum(1), torch.ones(4))


def test_timm_model_api(warm_model):
    """timm's contract: unpooled features (each image at its resolution, on the 1x grid), forward_head pools them."""
    model = warm_model
    x = torch.randn(3, 3, SIZE, SIZE)
    assert model.num_classes == 5 and model.num_features == 512
    with torch.no_grad():
        force_routes(model, [0, 0, 0])
        feats = model.forward_features(x)
        assert feats.shape == (3, model.num_features, 3, 3)  # 96 px at stride 32
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (3, model.head_hidden_size)
        torch.testing.assert_close(pre, feats.mean((2, 3)), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.forward_head(feats), model(x), rtol=1e-5, atol=1e-6)
        force_routes(model, [2, 0, 1])
        mixed = model.forward_features(x)
        for i, j in enumerate([2, 0, 1]):  # each image's own maps, resampled onto the 1x grid
            own = plain_backbone(model, j).eval().forward_features(hand_resize(x[i:i + 1], SIZES[j]))
            torch.testing.assert_close(mixed[i:i + 1], F.interpolate(own, size=(3, 3), mode='bilinear'),
                                       rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model.forward_features(x, resolution_index=2),
                                   plain_backbone(model, 2).eval().forward_features(hand_resize(x, SIZES[2])))
        del model._predictor_scores
    assert model.get_classifier() is model.backbone.fc
    model.reset_classifier(7)
    assert model.num_classes == 7 and model(x).shape == (3, 7)
    first_convs = model.pretrained_cfg['first_conv']
    assert len(first_convs) == 2
    for name in first_convs:
        assert model.get_submodule(name).in_channels == 3
    readers = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3]
    assert sorted(readers) == sorted(first_convs)
    for name in model.pretrained_cfg['classifier']:
        assert isinstance(model.get_submodule(name), nn.Linear)


@pytest.mark.parametrize('backbone', ['tf_efficientnet_lite0', 'mobilenetv3_small_050', 'regnetx_002',
                                      'convnext_atto'])
def test_other_backbones_route_and_backprop(backbone):
    model = tiny(backbone).train()
    model(torch.randn(4, 3, SIZE, SIZE)).mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    for name in model.pretrained_cfg['first_conv']:
        assert model.get_submodule(name).in_channels == 3


def test_convert_sync_batchnorm_keeps_outputs(warm_model):
    x = torch.randn(5, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = warm_model(x)
        synced = convert_sync_batchnorm(copy.deepcopy(warm_model)).eval()
        assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.backbone.modules())
        torch.testing.assert_close(synced(x), ref)


def test_create_drnet_wraps_a_built_backbone():
    backbone = timm.create_model('resnet18', num_classes=3)
    model = create_drnet(backbone, resolutions=(1.0, 0.5), predictor='mobile', predictor_size=32)
    assert model.backbone is backbone and model.num_resolutions == 2
    assert model(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 3)


@pytest.mark.parametrize('resolutions, message', [
    ((1.0, 0.0), r'\(0, 1\]'),
    ((1.5, 0.5), r'\(0, 1\]'),
    ((1.0, 0.5, 0.5), 'repeat'),
    ((0.5, 1.0), 'sorted'),
    ((), 'at least one'),
])
def test_bad_resolutions(resolutions, message):
    with pytest.raises(ValueError, match=message):
        tiny(resolutions=resolutions)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="Unknown backbone 'resnet_does_not_exist'"):
        create_drnet('resnet_does_not_exist')


def test_unknown_predictor_grad():
    with pytest.raises(ValueError, match="predictor_grad 'chosen'.*routed"):
        tiny(predictor_grad='chosen')


def test_unknown_predictor():
    with pytest.raises(ValueError, match="Unknown predictor 'big'"):
        tiny(predictor='big')


@pytest.mark.parametrize('x, error, message', [
    (torch.randn(2, 1, SIZE, SIZE), ValueError, '3 input channels, got 1'),
    (torch.randn(3, SIZE, SIZE), ValueError, r'\(B, C, H, W\)'),
    (torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8), TypeError, 'floating point'),
    (torch.randn(2, 3, 24, 24), ValueError, 'too small'),
    (torch.randn(3, 3, SIZE, SIZE).index_fill_(0, torch.tensor([1]), float('nan')), ValueError, r'NaN or Inf .*\[1\]'),
    (torch.randn(2, 3, SIZE, SIZE).index_fill_(0, torch.tensor([0]), float('inf')), ValueError, r'NaN or Inf .*\[0\]'),
    ([[1.0]], TypeError, 'torch.Tensor'),
])
@pytest.mark.parametrize('training', [False, True])
def test_bad_inputs(x, error, message, training):
    model = tiny().train(training)
    with pytest.raises(error, match=message):
        model(x)
    with pytest.raises(error, match=message):
        model(x, resolution_index=1)


def test_finite_input_whose_sum_overflows_is_accepted():
    # the NaN / Inf check first looks at the batch sum; a finite batch whose sum overflows must still pass
    model = tiny().eval()
    x = torch.full((2, 3, SIZE, SIZE), 3e38)
    assert not torch.isfinite(x.sum())
    with torch.no_grad():
        assert model(x).shape == (2, 5)


def test_shared_bn_ablation_keeps_plain_norms():
    model = tiny(private_bn=False).eval()
    assert not any(isinstance(m, ResolutionBatchNorm) for m in model.modules())
    x = torch.randn(3, 3, SIZE, SIZE)
    with torch.no_grad():
        ref = copy.deepcopy(model.backbone)(hand_resize(x, SIZES[1]))
        torch.testing.assert_close(model(x, resolution_index=1), ref, rtol=0, atol=0)
        assert model(x).shape == (3, 5)
    assert model.drnet_args()['private_bn'] is False

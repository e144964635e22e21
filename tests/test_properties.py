""" Property tests (hypothesis): batch split / scatter for any batch and routing; BN conversion round trips."""
import copy
from functools import lru_cache

import torch
import torch.nn.functional as F
import timm
from hypothesis import HealthCheck, given, settings, strategies as st

from timm_drnet import convert_resolution_bn, resolution_norms, select_resolution_bn, set_active_resolution

SIZE = 64
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@lru_cache(maxsize=None)
def routed_model():
    torch.manual_seed(0)
    model = timm.create_model('drnet', backbone='resnet10t', predictor='mobile', num_classes=4)
    model.train()
    with torch.no_grad():  # distinct statistics per branch, so a wrong branch shows
        for j in range(3):
            model(torch.randn(8, 3, SIZE, SIZE) * (j + 1) + j, resolution_index=j)
    model.mark_predictor_trained()  # route by the (forced) predictor scores in eval
    return model.eval()


@settings(max_examples=25, **SETTINGS)
@given(routes=st.lists(st.integers(0, 2), min_size=0, max_size=64), seed=st.integers(0, 2 ** 16))
def test_split_scatter_returns_every_image_in_place(routes, seed):
    model = routed_model()
    x = torch.randn(len(routes), 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    forced = F.one_hot(torch.tensor(routes, dtype=torch.long), 3).float() * 20.
    model._predictor_scores = lambda images, bias: forced  # the routing is the input under test here
    try:
        with torch.no_grad():
            out = model.forward_routed(x)
            assert out.logits.shape == (len(routes), 4)
            assert out.resolution_index.tolist() == routes
            for i, j in enumerate(routes):  # each image alone, at its resolution, through the same branch
                alone = model(x[i:i + 1], resolution_index=j)
                torch.testing.assert_close(out.logits[i:i + 1], alone, rtol=1e-4, atol=1e-5)
    finally:
        del model._predictor_scores


FAMILIES = ['resnet10t', 'tf_efficientnet_lite0', 'mobilenetv3_small_050', 'regnetx_002', 'convnext_atto',
            'ghostnet_050', 'mobilenetv2_050', 'dla46_c', 'lcnet_050']


@lru_cache(maxsize=None)
def plain_model(name: str):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, SIZE, SIZE))  # non-trivial running stats
    return model.eval()


def perturb_norms(module, j: int) -> None:
    """Give every batch norm under ``module`` affine weights and statistics of its own, different for each j."""
    with torch.no_grad():
        for m in module.modules():
            if not isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                continue
            m.weight.mul_(1 + 0.1 * (j + 1))
            m.bias.add_(0.05 * (j + 1))
            m.running_mean.add_(0.1 * (j + 1))


@settings(max_examples=30, **SETTINGS)
@given(name=st.sampled_from(FAMILIES), num_resolutions=st.integers(1, 4), data=st.data(),
       seed=st.integers(0, 2 ** 16))
def test_convert_and_select_round_trip(name, num_resolutions, data, seed):
    """Branch j of a converted model, active or selected, computes exactly what the plain model with branch j's
    norms computes; the branches are made to differ first, so a wrong branch index fails."""
    model = plain_model(name)
    index = data.draw(st.integers(0, num_resolutions - 1))
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    converted = convert_resolution_bn(copy.deepcopy(model), num_resolutions)
    for norm in resolution_norms(converted):
        for j, branch in enumerate(norm.branches):
            perturb_norms(branch, j)
    ref_model = copy.deepcopy(model)
    perturb_norms(ref_model, index)
    set_active_resolution(converted, index)
    back = select_resolution_bn(copy.deepcopy(converted), index)
    with torch.no_grad():
        ref = ref_model(x)
        torch.testing.assert_close(converted(x), ref, rtol=0, atol=0)
        torch.testing.assert_close(back(x), ref, rtol=0, atol=0)
        if num_resolutions > 1 and resolution_norms(converted):
            set_active_resolution(converted, (index + 1) % num_resolutions)
            assert not torch.equal(converted(x), ref), 'another branch must compute something else'
    assert type(back) is type(model)
    assert back.state_dict().keys() == model.state_dict().keys()

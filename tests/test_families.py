""" Every timm family: it wraps (routes every image at its snapped candidate, trains a step with a group of one image,
gradients everywhere) or it is refused at construction with one clear error. The table in docs/models.md is this
list (``python tests/test_families.py`` rewrites it). """
import copy
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import timm_drnet
from timm_drnet import select_resolution_bn

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[1] / 'docs' / 'models.md'
SIZE = 128  # test input; the construction check runs at each model's own pretrained size

# family: (one model, 'wraps' or 'refused', the size multiple its candidates snap to, why refused)
FAMILIES = {
    'ResNet': ('resnet10t', 'wraps', 1, ''),
    'ResNetV2': ('resnetv2_18', 'wraps', 1, ''),
    'NF-ResNet': ('nf_resnet26', 'wraps', 1, ''),
    'EfficientNet': ('tf_efficientnet_lite0', 'wraps', 1, ''),
    'MobileNetV3': ('mobilenetv3_small_050', 'wraps', 1, ''),
    'MobileNetV4': ('mobilenetv4_conv_small', 'wraps', 1, ''),
    'RegNet': ('regnetx_002', 'wraps', 1, ''),
    'ConvNeXt': ('convnext_atto', 'wraps', 1, ''),
    'GhostNet': ('ghostnet_050', 'wraps', 1, ''),
    'RepViT': ('repvit_m0_9', 'wraps', 1, ''),
    'FastViT': ('fastvit_t8', 'wraps', 1, ''),
    'MobileViT': ('mobilevit_xxs', 'wraps', 1, ''),
    'EdgeNeXt': ('edgenext_xx_small', 'wraps', 1, ''),
    'PVT-v2': ('pvt_v2_b0', 'wraps', 1, ''),
    'EfficientViT (MIT)': ('efficientvit_b0', 'wraps', 1, ''),
    'ViT': ('vit_tiny_patch16_224', 'wraps', 16, ''),
    'DeiT': ('deit_tiny_patch16_224', 'wraps', 16, ''),
    'EVA-02': ('eva02_tiny_patch14_224', 'wraps', 14, ''),
    'Swin': ('swin_tiny_patch4_window7_224', 'wraps', 4, ''),
    'DLA': ('dla46_c', 'wraps', 32, ''),
    'HRNet': ('hrnet_w18_small', 'wraps', 32, ''),
    'LeViT': ('levit_128s', 'refused', None, 'attention-bias tables sized for one input'),
    'EfficientFormer': ('efficientformer_l1', 'refused', None, 'a 7x7 attention-bias table'),
    'MaxViT': ('maxvit_nano_rw_256', 'refused', None, 'relative-position tables sized for one input'),
    'CoAtNet': ('coatnet_nano_rw_224', 'refused', None, 'relative-position tables sized for one input'),
    'Hiera': ('hiera_tiny_224', 'refused', None, 'a fixed unroll and position embedding'),
    'MLP-Mixer': ('mixer_s16_224', 'refused', None, 'token-mixing MLPs sized for one grid'),
}


def _resize(x, size):
    return x if tuple(x.shape[-2:]) == tuple(size) else \
        F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=True)


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_family_wraps_or_is_refused(family):
    name, expected, multiple, _ = FAMILIES[family]
    torch.manual_seed(0)
    if expected == 'refused':
        with pytest.raises(ValueError, match=rf"Backbone '{name}' cannot run at the candidate resolutions") as e:
            timm_drnet.create_drnet(name, predictor='mobile', num_classes=4)
        assert 'fails at' in str(e.value) and 'use other resolutions or another model' in str(e.value)
        return
    model = timm_drnet.create_drnet(name, predictor='mobile', num_classes=4)
    assert model.size_multiple == multiple
    sizes = model.candidate_sizes(SIZE, SIZE)
    assert all(s % multiple == 0 for size in sizes for s in size)
    x = torch.randn(5, 3, SIZE, SIZE)

    # eval: every image at its (forced) candidate, logits exactly the plain backbone's at the snapped size
    model.mark_predictor_trained()
    routes = [0, 1, 2, 1, 2]
    model._predictor_scores = lambda images, bias: F.one_hot(torch.tensor(routes), 3).float() * 20.
    model.eval()
    with torch.no_grad():
        out = model.forward_routed(x)
        assert out.resolution_index.tolist() == routes
        for j in range(3):
            plain = select_resolution_bn(copy.deepcopy(model.backbone), j).eval()
            chosen = [i for i, r in enumerate(routes) if r == j]
            ref = plain(_resize(x[chosen], sizes[j]))
            torch.testing.assert_close(out.logits[chosen], ref, rtol=1e-3, atol=1e-4)
            with FlopCounterMode(display=False) as counter:  # costs: the flop counter at the snapped size
                plain(torch.zeros(1, 3, *sizes[j]))
            assert model.cost_table((3, SIZE, SIZE)).backbone[j] == pytest.approx(
                counter.get_total_flops() / 2e9, rel=1e-6)

    # train: candidate 1 gets exactly one image; every backbone parameter gets a gradient (the forced scores
    # stand in for the predictor, whose gradient tests/test_drnet.py checks)
    routes[:] = [0, 1, 2, 2, 0]
    model.train()
    out = model.forward_routed(x)
    assert torch.bincount(out.resolution_index, minlength=3).tolist()[1] == 1
    F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3, 0])).backward()
    missing = [n for n, p in model.backbone.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def docs_table() -> str:
    lines = ['| family | model tried | result | candidates of a 224 px input | why refused |',
             '| --- | --- | --- | --- | --- |']
    for family, (name, expected, multiple, why) in FAMILIES.items():
        sizes = '' if multiple is None else ' / '.join(
            str(h) for h, _ in timm_drnet.routing.candidate_sizes((1.0, 0.75, 0.5), 224, 224, multiple))
        snapped = f'{sizes} (multiples of {multiple})' if multiple and multiple > 1 else sizes
        lines.append(f'| {family} | `{name}` | {expected} | {snapped} | {why} |')
    return '\n'.join(lines)


_MARKERS = re.compile(r'(<!-- families: start -->\n)(.*?)(\n<!-- families: end -->)', re.S)


def test_docs_list_the_families():
    text = DOCS.read_text()
    found = _MARKERS.search(text)
    assert found, f'{DOCS} lacks the families table markers'
    assert found.group(2) == docs_table(), f'{DOCS} is out of date: run python tests/test_families.py'


if __name__ == '__main__':  # rewrite the table in docs/models.md
    text = DOCS.read_text()
    if not _MARKERS.search(text):
        sys.exit(f'{DOCS} lacks the families table markers')
    DOCS.write_text(_MARKERS.sub(lambda m: m.group(1) + docs_table() + m.group(3), text))

""" predictor='backbone' / 'stem': a copy of the backbone's first stages, checked against timm's own features_only
models."""
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import timm
from torch.utils.flop_counter import FlopCounterMode

import timm_drnet
from timm_drnet import create_predictor, resolution_norms

FAMILIES = ['resnet18', 'tf_efficientnet_lite0', 'mobilenetv3_small_050', 'convnext_atto', 'regnetx_002']


def _randomize_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


def _features_reference(name: str, backbone: torch.nn.Module, index: int = 2) -> torch.nn.Module:
    """timm's features_only model at feature ``index`` with the backbone's weights.

    features_only flattens top-level sequentials ('stem.0' -> 'stem_0'), so names are mapped back.
    """
    ref = timm.create_model(name, features_only=True, out_indices=(index,))
    own = backbone.state_dict()
    ref.load_state_dict({k: own[k if k in own else k.replace('_', '.', 1)] for k in ref.state_dict()})
    return ref.eval()


@pytest.mark.parametrize('predictor,index', [('backbone', 2), ('stem', 0)])
@pytest.mark.parametrize('name', FAMILIES)
def test_predictor_is_the_backbone_stem_with_a_linear_scorer(name, predictor, index):
    torch.manual_seed(0)
    backbone = timm.create_model(name, num_classes=5)
    _randomize_bn(backbone)
    ref = _features_reference(name, backbone, index)
    model = timm_drnet.create_drnet(backbone, predictor=predictor, resolutions=(1.0, 0.5)).eval()
    assert not resolution_norms(model.predictor), 'the predictor keeps plain BNs of its own'
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        feats = ref(x)[0]
        expected = F.linear(feats.mean((2, 3)), model.predictor.fc.weight, model.predictor.fc.bias)
        torch.testing.assert_close(model.predictor(x), expected, rtol=1e-4, atol=1e-5)
    # the trunk is a copy: training the backbone does not move it
    model.backbone.get_submodule(model.pretrained_cfg['first_conv'][1][len('backbone.'):]).weight.data.add_(1.)
    with torch.no_grad():
        torch.testing.assert_close(model.predictor(x), expected, rtol=1e-4, atol=1e-5)
    for conv in model.pretrained_cfg['first_conv']:
        assert model.get_submodule(conv).in_channels == 3


def test_predictor_macs_match_flop_counter_on_timm_features():
    # resnet's features_only model stops at its last output (EfficientNet's runs every block)
    backbone = timm.create_model('resnet18')
    ref = _features_reference('resnet18', backbone)
    model = timm_drnet.create_drnet(backbone, predictor='backbone').eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        ref(torch.randn(1, 3, 64, 64))
    expected = counter.get_total_flops() / 2 + model.predictor.fc.in_features * model.num_resolutions
    assert model.cost_table((3, 224, 224)).predictor * 1e9 == pytest.approx(expected, rel=1e-6)


def test_pretrained_backbone_weights_reach_the_predictor(tmp_path):
    plain = timm.create_model('resnet18', num_classes=3)
    _randomize_bn(plain)
    backbone_file = tmp_path / 'resnet18.safetensors'
    safetensors.torch.save_file(plain.state_dict(), backbone_file)
    model = timm.create_model('drnet', backbone='resnet18', predictor='backbone', num_classes=3, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(backbone_file)))
    for key in ('conv1.weight', 'bn1.running_var', 'layer2.0.downsample.1.weight'):
        assert torch.equal(model.predictor.trunk.get_parameter(key) if 'running' not in key else
                           model.predictor.trunk.get_buffer(key), plain.state_dict()[key]), key
    gray = timm.create_model('drnet', backbone='resnet18', predictor='backbone', num_classes=3, in_chans=1)
    assert gray.predictor.trunk.conv1.in_channels == 1
    with torch.no_grad():
        assert gray.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize('predictor', ['backbone', 'stem'])
def test_local_dir_round_trip_keeps_the_backbone_predictor(tmp_path, predictor):
    model = timm.create_model('drnet', backbone='resnet18', predictor=predictor, num_classes=3).eval()
    _randomize_bn(model)
    timm_drnet.save_for_hf(model, tmp_path / 'hub')
    loaded = timm.create_model(f'local-dir:{tmp_path / "hub"}', pretrained=True).eval()
    assert loaded.predictor_name == predictor
    x = torch.randn(4, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded.forward_routed(x).logits, model.forward_routed(x).logits)


def test_backbone_without_intermediates_is_a_clear_error():
    with pytest.raises(ValueError, match="predictor='backbone' and 'stem' need a timm backbone .* got Conv2d"):
        create_predictor('backbone', 3, backbone=torch.nn.Conv2d(3, 8, 3))


def test_onnx_export_routes_like_the_model(tmp_path):
    pytest.importorskip('onnxruntime')
    model = timm.create_model('drnet', backbone='resnet18', predictor='backbone', num_classes=3).eval()
    _randomize_bn(model)
    model.mark_predictor_trained()
    x = torch.randn(6, 3, 96, 96)
    timm_drnet.export_onnx(model, tmp_path, input_size=(3, 96, 96))
    out = timm_drnet.OnnxDRNet(tmp_path).forward_routed(x.numpy())
    with torch.no_grad():
        ref = model.forward_routed(x)
    assert (out.resolution_index == ref.resolution_index.numpy()).all()
    assert abs(out.logits - ref.logits.numpy()).max() < 1e-4

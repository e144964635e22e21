""" Registry, pretrained weights, safetensors round trips through a real offline Hugging Face cache."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
import timm

import timm_drnet
from timm_drnet import DRNET_BACKBONES, add_to_hf_cache, resolution_norms

REPO = Path(__file__).resolve().parents[1]


def run_offline(code: str, cache: Path) -> str:
    """Run ``code`` in a fresh interpreter with HF_HUB_OFFLINE=1 and ``cache`` as the HF cache."""
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize('name', sorted(DRNET_BACKBONES))
def test_registered_variants(name):
    assert name in timm.list_models('drnet_*')
    model = timm.create_model(name, num_classes=4).eval()
    assert model.num_classes == 4
    cfg = model.pretrained_cfg
    assert cfg['architecture'] == name
    for conv in cfg['first_conv']:
        assert model.get_submodule(conv).in_channels == 3
    if name in ('drnet_resnet18', 'drnet_mobilenetv2_100'):
        with torch.no_grad():
            assert model(torch.randn(2, 3, 128, 128)).shape == (2, 4)
    if name == 'drnet_mobilenetv2_100':
        assert model.resolutions == (1.0, 0.875, 0.75)
    assert model.predictor_name == DRNET_BACKBONES[name]['predictor']


def _backbone_cache(tmp_path: Path, backbone: str, repo_id: str) -> dict:
    """Save a timm backbone's (random) weights as its hub repo in an HF cache; return its state dict."""
    torch.manual_seed(1)
    src = timm.create_model(backbone)
    with torch.no_grad():  # distinctive BN statistics to find again in every branch
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    folder = tmp_path / 'export'
    timm.models.save_for_hf(src, folder, safe_serialization=True)
    add_to_hf_cache(folder, repo_id, tmp_path / 'hub')
    return src.state_dict()


@pytest.mark.slow
def test_pretrained_loads_backbone_weights_into_every_branch(tmp_path):
    ref = _backbone_cache(tmp_path, 'resnet18', 'timm/resnet18.a1_in1k')
    torch.save(ref, tmp_path / 'ref.pth')
    out = run_offline(f'''
import torch, timm, timm_drnet
ref = torch.load({str(tmp_path / 'ref.pth')!r}, weights_only=True)
m = timm.create_model('drnet_resnet18', pretrained=True)
sd = m.state_dict()
checked = 0
for k, v in ref.items():
    key = 'backbone.' + k
    if key in sd:
        assert torch.equal(sd[key], v), key
        checked += 1
        continue
    parent, leaf = k.rsplit('.', 1)
    for j in range(3):
        assert torch.equal(sd[f'backbone.{{parent}}.branches.{{j}}.{{leaf}}'], v), (k, j)
    checked += 1
assert checked == len(ref)
# five classes, one channel: timm adapts the stem and drops the 1000-class head
m = timm.create_model('drnet_resnet18', pretrained=True, num_classes=5, in_chans=1).eval()
w = ref['conv1.weight'].sum(1, keepdim=True)
assert torch.allclose(m.backbone.conv1.weight, w)
assert m.predictor.stem.conv.in_channels == 1
with torch.no_grad():
    assert m(torch.randn(2, 1, 96, 96)).shape == (2, 5)
print('ok', checked)
''', tmp_path / 'hub')
    assert out.startswith('ok')


def _trained_drnet():
    model = timm.create_model('drnet', backbone='resnet18', predictor='mobile', resolutions=(1.0, 0.5),
                              num_classes=3, tau=0.7)
    model.train()
    with torch.no_grad():
        for j in range(2):
            model(torch.randn(4, 3, 96, 96) * (j + 2), resolution_index=j)
        model.resolution_bias.copy_(torch.tensor([0.3, -0.2]))
    return model.eval()


@pytest.mark.slow
def test_save_for_hf_round_trip_hf_hub_and_local_dir(tmp_path):
    model = _trained_drnet()
    folder = tmp_path / 'drnet-export'
    timm_drnet.save_for_hf(model, folder)
    assert (folder / 'model.safetensors').is_file() and not (folder / 'pytorch_model.bin').exists()
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == 'drnet'
    assert config['model_args']['resolutions'] == [1.0, 0.5]
    assert config['model_args']['predictor'] == 'mobile'
    assert config['model_args']['backbone'] == 'resnet18'
    assert config['num_classes'] == 3
    add_to_hf_cache(folder, 'someone/drnet-test', tmp_path / 'hub')
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        ref = model(x)
    torch.save(dict(x=x, ref=ref), tmp_path / 'io.pth')
    out = run_offline(f'''
import torch, timm, timm_drnet
io = torch.load({str(tmp_path / 'io.pth')!r}, weights_only=True)
for name in ('hf-hub:someone/drnet-test', 'local-dir:{folder}'):
    m = timm.create_model(name, pretrained=True).eval()
    assert m.resolutions == (1.0, 0.5) and m.predictor_name == 'mobile' and m.tau == 0.7, name
    assert torch.equal(m.resolution_bias, torch.tensor([0.3, -0.2]))
    with torch.no_grad():
        assert torch.equal(m(io['x']), io['ref']), name
print('ok')
''', tmp_path / 'hub')
    assert out.strip() == 'ok'


def test_hub_weights_adapt_to_new_classes_and_channels(tmp_path):
    model = _trained_drnet()
    folder = tmp_path / 'export'
    timm_drnet.save_for_hf(model, folder)
    m = timm.create_model(f'local-dir:{folder}', pretrained=True, num_classes=5, in_chans=1).eval()
    sd = safetensors.torch.load_file(folder / 'model.safetensors')
    assert m.num_classes == 5 and m.backbone.fc.out_features == 5
    torch.testing.assert_close(m.backbone.conv1.weight, sd['backbone.conv1.weight'].sum(1, keepdim=True))
    torch.testing.assert_close(m.predictor.stem.conv.weight, sd['predictor.stem.conv.weight'].sum(1, keepdim=True))
    torch.testing.assert_close(m.backbone.layer1[0].bn1.branches[1].running_var,
                               sd['backbone.layer1.0.bn1.branches.1.running_var'])


def test_file_overlay_takes_drnet_or_backbone_checkpoints(tmp_path):
    model = _trained_drnet()
    drnet_file = tmp_path / 'drnet.safetensors'
    safetensors.torch.save_file(model.state_dict(), drnet_file)
    loaded = timm.create_model('drnet', backbone='resnet18', predictor='mobile', resolutions=(1.0, 0.5),
                               num_classes=3, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(drnet_file), num_classes=3))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k

    plain = timm.create_model('resnet18', num_classes=3)
    backbone_file = tmp_path / 'resnet18.safetensors'
    safetensors.torch.save_file(plain.state_dict(), backbone_file)
    loaded = timm.create_model('drnet', backbone='resnet18', predictor='mobile', num_classes=3, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(backbone_file)))
    assert torch.equal(loaded.backbone.conv1.weight, plain.conv1.weight)
    for norm in resolution_norms(loaded.backbone)[:1]:
        for branch in norm.branches:
            assert torch.equal(branch.weight, plain.bn1.weight)


def test_hubconf_torch_hub_load():
    spec = importlib.util.spec_from_file_location('hubconf', REPO / 'hubconf.py')
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith('_')]
    assert set(DRNET_BACKBONES) | {'drnet'} <= set(entries)
    model = torch.hub.load(str(REPO), 'drnet_resnet18', source='local', num_classes=3)
    assert isinstance(model, timm_drnet.DRNet) and model.num_classes == 3
    model = torch.hub.load(str(REPO), 'drnet', source='local', backbone='resnet18', predictor='mobile',
                           num_classes=2)
    assert model.backbone_name == 'resnet18'

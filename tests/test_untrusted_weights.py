""" Loading a checkpoint never executes code: a pickle that would create a file is refused everywhere."""
import json
from pathlib import Path

import pytest
import torch
import timm

from timm_drnet import UnsafeCheckpointError, load_state_dict_file, read_state_dict_keys

from script_runner import error_lines, run_script


class _CreatesFile:
    """Unpickling this object would open (create) ``path``: code execution inside a checkpoint."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, 'w')


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({'conv1.weight': torch.zeros(1), 'payload': _CreatesFile(marker)}, path)
    assert not marker.exists()
    return path


def test_load_state_dict_file_refuses_code(tmp_path):
    marker = tmp_path / 'pwned'
    ckpt = malicious_checkpoint(tmp_path / 'evil.pth', marker)
    for loader in (load_state_dict_file, read_state_dict_keys):
        with pytest.raises(UnsafeCheckpointError, match='evil.pth'):
            loader(ckpt)
    assert not marker.exists()


def test_pretrained_file_overlay_refuses_code(tmp_path):
    marker = tmp_path / 'pwned'
    ckpt = malicious_checkpoint(tmp_path / 'evil.pth', marker)
    with pytest.raises(UnsafeCheckpointError, match='Refusing to load'):
        timm.create_model('drnet', backbone='resnet18', predictor='mobile', pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(ckpt)))
    assert not marker.exists()


def test_local_dir_refuses_code(tmp_path):
    marker = tmp_path / 'pwned'
    folder = tmp_path / 'model'
    folder.mkdir()
    malicious_checkpoint(folder / 'pytorch_model.bin', marker)
    (folder / 'config.json').write_text(json.dumps(dict(
        architecture='drnet', num_classes=3, model_args=dict(backbone='resnet18', predictor='mobile'),
        pretrained_cfg=dict(input_size=[3, 224, 224], num_classes=3))))
    with pytest.raises(Exception, match='weights_only') as info:
        timm.create_model(f'local-dir:{folder}', pretrained=True)
    assert not isinstance(info.value, (AttributeError, KeyError, TypeError))
    assert not marker.exists()


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    bad = tmp_path / 'broken.safetensors'
    bad.write_bytes(b'\x00' * 40)
    with pytest.raises(UnsafeCheckpointError, match='broken.safetensors'):
        load_state_dict_file(bad)


@pytest.mark.slow
@pytest.mark.parametrize('script, flags', [
    ('train.py', ['--initial-checkpoint']),
    ('train.py', ['--resume']),
    ('train.py', ['--pretrained', '--pretrained-path']),
    ('validate.py', ['--checkpoint']),
    ('validate.py', ['--pretrained', '--pretrained-path']),
])
def test_scripts_refuse_code_in_every_weights_flag(script, flags, tmp_path):
    marker = tmp_path / 'pwned'
    ckpt = malicious_checkpoint(tmp_path / 'evil.pth.tar', marker)
    small = ['--synthetic-samples', '16', '16', '--output', tmp_path] if script == 'train.py' else \
        ['--synthetic-samples', '16']
    proc = run_script(script, [*small, '--workers', '0', *flags, ckpt])
    assert not marker.exists(), 'the pickle ran code'
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in error_lines(proc) if line.startswith('ERROR')]
    assert len(errors) == 1 and 'Refusing to load' in errors[0] and str(ckpt) in errors[0], errors

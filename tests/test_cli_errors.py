""" Bad arguments end train.py / validate.py with one clear message naming the problem and the fix. """
import pytest
import safetensors.torch
import torch

import copy

from timm_drnet import select_resolution_bn
from timm_drnet.config import DEFAULT_MODEL, DEFAULT_MODEL_KWARGS, build_drnet, drnet_config

from script_runner import error_lines, run_script

FAST = ['--synthetic-samples', '32', '32', '-b', '16', '--workers', '0']


def _assert_one_clear_error(proc, *phrases):
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert 'Traceback' not in proc.stderr
    errors = [line for line in error_lines(proc) if line.startswith('ERROR')]
    assert len(errors) == 1, errors
    for phrase in phrases:
        assert phrase in errors[0], errors[0]


def _save_checkpoint(path, resolutions=(1.0, 0.75, 0.5), num_classes=8, with_config=True):
    kwargs = dict(DEFAULT_MODEL_KWARGS, resolutions=list(resolutions))
    model = build_drnet(DEFAULT_MODEL, dict(kwargs, num_classes=num_classes))
    if with_config:
        torch.save({'state_dict': model.state_dict(), 'drnet': drnet_config(model, DEFAULT_MODEL, kwargs, (3, 64, 64))},
                   path)
    else:
        safetensors.torch.save_file(model.state_dict(), str(path))
    return path


@pytest.mark.slow
@pytest.mark.parametrize('args, phrases', [
    (['--model', 'drnet_nonexistent'], ["Unknown model 'drnet_nonexistent'", '--model drnet --model-kwargs backbone=']),
    (['--resolutions', '1.5', '0.5'], ['resolutions must lie in (0, 1]']),
    (['--stage', 'drnet', '--flops-target', '0.001'], ['--flops-target 0.001', 'below the smallest reachable',
                                                        'Choose a target between']),
])
def test_train_rejects_bad_settings(args, phrases, tmp_path):
    _assert_one_clear_error(run_script('train.py', [*FAST, *args, '--output', tmp_path]), *phrases)


@pytest.mark.slow
def test_stage2_trains_with_a_1x1_final_map(tmp_path):
    """Output stride 32 leaves one image at 32 px a 1x1 final map; routed training takes it (no up-front refusal)."""
    proc = run_script('train.py', [*FAST, '--stage', 'drnet', '--model-kwargs', 'output_stride=32', '--epochs', '1',
                                   '--output', tmp_path, '--experiment', 'os32'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / 'os32' / 'drnet' / 'model.safetensors').is_file()


def test_single_image_batch_norm_uses_running_statistics():
    """ A training batch norm that sees one value per channel (one image, 1x1 map) normalises with its running
    statistics and leaves them alone, the other norms use batch statistics, and every affine weight learns: as a
    plain copy of the branch with exactly those norms in eval mode computes it. """
    model = build_drnet(DEFAULT_MODEL, dict(DEFAULT_MODEL_KWARGS, output_stride=32, num_classes=4)).train()
    with torch.no_grad():  # running statistics away from their initial values
        model(torch.randn(8, 3, 64, 64) * 2 + 1, resolution_index=2)
    x = torch.randn(1, 3, 64, 64)
    small = torch.nn.functional.interpolate(x, size=(32, 32), mode='bilinear', antialias=True)
    ref = select_resolution_bn(copy.deepcopy(model.backbone), 2).eval()
    single = []
    hooks = [m.register_forward_pre_hook(lambda m, a, n=n: single.append(n) if a[0].numel() == a[0].shape[1] else None)
             for n, m in ref.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        ref(small)
    for h in hooks:
        h.remove()
    assert single, 'the smallest candidate should leave some batch norm one value per channel'
    ref.train()
    for name in single:
        ref.get_submodule(name).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out, expected = model(x, resolution_index=2), ref(small)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    after = model.state_dict()
    for name in single:
        for stat in ('running_mean', 'running_var', 'num_batches_tracked'):
            key = f'backbone.{name}.branches.2.{stat}'
            assert torch.equal(after[key], before[key]), key
    weights = torch.randn(out.shape)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    for name in single:
        for leaf in ('weight', 'bias'):
            torch.testing.assert_close(model.get_parameter(f'backbone.{name}.branches.2.{leaf}').grad,
                                       ref.get_parameter(f'{name}.{leaf}').grad, rtol=1e-4, atol=1e-6)
    assert any(ref.get_parameter(f'{name}.bias').grad.abs().sum() > 0 for name in single)
    assert all(m.training for m in model.modules())


@pytest.mark.slow
def test_data_dir_without_images(tmp_path):
    (tmp_path / 'data' / 'train' / 'cat').mkdir(parents=True)
    (tmp_path / 'data' / 'train' / 'cat' / 'notes.txt').write_text('not an image')
    proc = run_script('train.py', [*FAST, '--data-dir', tmp_path / 'data', '--output', tmp_path])
    _assert_one_clear_error(proc, 'No images found', '--data-dir')


@pytest.mark.slow
def test_checkpoint_with_other_resolutions(tmp_path):
    ckpt = _save_checkpoint(tmp_path / 'two.pth.tar', resolutions=(1.0, 0.5))
    proc = run_script('train.py', [*FAST, '--initial-checkpoint', ckpt, '--resolutions', '1', '0.75', '0.5',
                                   '--output', tmp_path])
    _assert_one_clear_error(proc, 'made for 2 candidate resolutions (1.0, 0.5)', 'has 3', '--resolutions 1.0 0.5')
    # a bare weights file without config: the number of private BN branches tells
    plain = _save_checkpoint(tmp_path / 'two.safetensors', resolutions=(1.0, 0.5), with_config=False)
    proc = run_script('validate.py', ['--checkpoint', plain, '--synthetic-samples', '16', '--workers', '0'])
    _assert_one_clear_error(proc, 'made for 2 candidate resolutions', '--resolutions with 2 values')


@pytest.mark.slow
def test_checkpoint_with_other_classes(tmp_path):
    plain = _save_checkpoint(tmp_path / 'ten.safetensors', num_classes=10, with_config=False)
    proc = run_script('train.py', [*FAST, '--initial-checkpoint', plain, '--output', tmp_path])
    _assert_one_clear_error(proc, '10-class classifier', 'built for 8 classes', '--num-classes 10')


@pytest.mark.slow
def test_resume_needs_a_training_checkpoint(tmp_path):
    plain = _save_checkpoint(tmp_path / 'weights.safetensors', with_config=False)
    proc = run_script('train.py', [*FAST, '--resume', plain, '--output', tmp_path])
    _assert_one_clear_error(proc, 'not a train.py training checkpoint', '--initial-checkpoint')


@pytest.mark.slow
@pytest.mark.parametrize('args, phrases', [
    (['--cascade'], ['--cascade needs exactly one of --target-gmacs / --target-ms', '--cascade-threshold']),
    (['--cascade-threshold', '0.5', '--target-gmacs', '0.01'], ['--cascade needs exactly one of']),
    (['--cascade', '--target-gmacs', '0.01', '--calib-labels'], ['--calib-labels', 'without labels']),
    (['--cascade-threshold', '0.5', '--cascade-levels', '0', '5'], ['Cascade levels [5] out of range',
                                                                    '3 candidate resolutions']),
    (['--cascade-threshold', '-1'], ['Cascade threshold must be a finite number >= 0']),
    (['--cascade', '--target-gmacs', '0.01', '--calib-dir', '/nonexistent/calib'],
     ['--calib-dir /nonexistent/calib: no images to calibrate on']),
])
def test_validate_rejects_bad_cascade_settings(args, phrases, tmp_path):
    ckpt = _save_checkpoint(tmp_path / 'model.pth.tar')
    proc = run_script('validate.py', ['--checkpoint', ckpt, '--synthetic-samples', '16', '--workers', '0', *args])
    _assert_one_clear_error(proc, *phrases)

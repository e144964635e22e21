""" Bad arguments end train.py / validate.py with one clear message naming the problem and the fix. """
import pytest
import safetensors.torch
import torch

from timm_drnet.config import DEFAULT_MODEL, DEFAULT_MODEL_KWARGS, build_drnet, check_single_image_maps, drnet_config

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


@pytest.mark.parametrize('args, phrases', [
    (['--model', 'drnet_nonexistent'], ["Unknown model 'drnet_nonexistent'", '--model drnet --model-kwargs backbone=']),
    (['--resolutions', '1.5', '0.5'], ['resolutions must lie in (0, 1]']),
    (['--stage', 'drnet', '--flops-target', '0.001'], ['--flops-target 0.001', 'below the smallest reachable',
                                                        'Choose a target between']),
    (['--stage', 'drnet', '--model-kwargs', 'output_stride=32'], ['resolution 0.5 (32x32 px)', '1x1 final feature map',
                                                                   'output_stride=16']),
])
def test_train_rejects_bad_settings(args, phrases, tmp_path):
    _assert_one_clear_error(run_script('train.py', [*FAST, *args, '--output', tmp_path]), *phrases)


@pytest.mark.parametrize('output_stride', [32, 16])
def test_single_image_check_agrees_with_batch_norm(output_stride):
    """The up-front check fails exactly when a single training image at the smallest candidate crashes BN."""
    model = build_drnet(DEFAULT_MODEL, dict(DEFAULT_MODEL_KWARGS, output_stride=output_stride, num_classes=4)).train()
    try:
        model(torch.randn(1, 3, 64, 64), resolution_index=2)
        crashed = False
    except ValueError as e:
        assert 'Expected more than 1 value per channel' in str(e)
        crashed = True
    assert crashed == (output_stride == 32)
    if crashed:
        with pytest.raises(ValueError, match='1x1 final feature map'):
            check_single_image_maps(model, (3, 64, 64))
    else:
        check_single_image_maps(model, (3, 64, 64))
    assert model.training


def test_data_dir_without_images(tmp_path):
    (tmp_path / 'data' / 'train' / 'cat').mkdir(parents=True)
    (tmp_path / 'data' / 'train' / 'cat' / 'notes.txt').write_text('not an image')
    proc = run_script('train.py', [*FAST, '--data-dir', tmp_path / 'data', '--output', tmp_path])
    _assert_one_clear_error(proc, 'No images found', '--data-dir')


def test_checkpoint_with_other_resolutions(tmp_path):
    ckpt = _save_checkpoint(tmp_path / 'two.pth.tar', resolutions=(1.0, 0.5))
    proc = run_script('train.py', [*FAST, '--initial-checkpoint', ckpt, '--resolutions', '1', '0.75', '0.5',
                                   '--output', tmp_path])
    _assert_one_clear_error(proc, 'made for 2 candidate resolutions (1.0, 0.5)', 'has 3', '--resolutions 1.0 0.5')
    # a bare weights file without config: the number of private BN branches tells
    plain = _save_checkpoint(tmp_path / 'two.safetensors', resolutions=(1.0, 0.5), with_config=False)
    proc = run_script('validate.py', ['--checkpoint', plain, '--synthetic-samples', '16', '--workers', '0'])
    _assert_one_clear_error(proc, 'made for 2 candidate resolutions', '--resolutions with 2 values')


def test_checkpoint_with_other_classes(tmp_path):
    plain = _save_checkpoint(tmp_path / 'ten.safetensors', num_classes=10, with_config=False)
    proc = run_script('train.py', [*FAST, '--initial-checkpoint', plain, '--output', tmp_path])
    _assert_one_clear_error(proc, '10-class classifier', 'built for 8 classes', '--num-classes 10')


def test_resume_needs_a_training_checkpoint(tmp_path):
    plain = _save_checkpoint(tmp_path / 'weights.safetensors', with_config=False)
    proc = run_script('train.py', [*FAST, '--resume', plain, '--output', tmp_path])
    _assert_one_clear_error(proc, 'not a train.py training checkpoint', '--initial-checkpoint')


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

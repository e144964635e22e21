""" train.py --cost latency and validate.py budgets (--target-gmacs / --target-ms), as users run them, against
independent computations. No timing is asserted: only that the measured table is used and kept consistently. """
import csv
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import timm_drnet
from timm_drnet import CostTable
from timm_drnet.checkpoint import load_checkpoint_weights, load_training_checkpoint
from timm_drnet.config import DEFAULT_MODEL, DEFAULT_MODEL_KWARGS, build_drnet, drnet_config
from timm_drnet.data import SyntheticTextures

from script_runner import error_lines, run_script

LATENCY = ['--stage', 'drnet', '--cost', 'latency', '--latency-repeats', '3', '--synthetic-samples', '64', '32',
           '-b', '32', '--workers', '0']


def _synthetic(split: str, n: int):
    """Normalised images and labels of the built-in set, as the default model's loader makes them."""
    data = SyntheticTextures(split, num_samples=n)
    x = (torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5  # test_resnet mean = std = 0.5
    return x, torch.from_numpy(data.targets)


@pytest.mark.slow
def test_train_with_latency_costs_saves_and_reuses_the_measured_table(tmp_path):
    proc = run_script('train.py', [*LATENCY, '--epochs', '1', '--output', tmp_path, '--experiment', 'lat'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = tmp_path / 'lat' / 'drnet'
    ckpt = load_training_checkpoint(stage / 'last.pth.tar')
    [saved] = ckpt['drnet']['cost_tables']
    table = CostTable.from_dict(saved)
    assert table.unit == 'ms' and table.input_size == (3, 64, 64) and len(table.backbone) == 3
    assert all(c > 0 for c in table.backbone) and table.predictor > 0
    # alpha defaults to the mean candidate cost, now in ms
    assert f'alpha {sum(table.backbone) / 3:.4g} ms' in proc.stderr

    # the reported average is the table's cost of the routing the trained model does on the validation images
    model = build_drnet(DEFAULT_MODEL, dict(DEFAULT_MODEL_KWARGS, num_classes=8)).eval()
    load_checkpoint_weights(model, ckpt, stage / 'last.pth.tar')
    x, _ = _synthetic('validation', 32)
    with torch.no_grad():
        index = model.forward_routed(x).resolution_index
    expected = torch.tensor(table.backbone, dtype=torch.float64)[index].mean().item() + table.predictor
    with open(stage / 'summary.csv') as f:
        row = next(csv.DictReader(f))
    assert 'eval_gmacs' not in row and float(row['eval_ms']) == pytest.approx(expected, rel=1e-5)
    results = json.loads((tmp_path / 'lat' / 'results.json').read_text())
    assert results['cost_unit'] == 'ms' and results['backbone_cost'] == pytest.approx(table.backbone)
    assert results['drnet']['cost'] == pytest.approx(expected, rel=1e-5)
    # the exported model brings its table along
    exported = timm.create_model(f'local-dir:{stage}', pretrained=True)
    assert exported.cost_unit == 'ms' and exported.cost_table((3, 64, 64)) == table

    # a resumed run reinstalls the saved table (a new measurement would differ), and keeps it in its checkpoints
    resumed = run_script('train.py', [*LATENCY, '--epochs', '2', '--resume', stage / 'last.pth.tar'])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'Costs: the latency table saved in' in resumed.stderr and 'latency measured' not in resumed.stderr
    after = load_training_checkpoint(stage / 'last.pth.tar')
    assert after['epoch'] == 1 and after['drnet']['cost_tables'] == [saved]

    # and validate.py reports in it, and sets a budget in ms on it
    target = table.predictor + (min(table.backbone) + max(table.backbone)) / 2
    proc = run_script('validate.py', ['--checkpoint', stage / 'last.pth.tar', '--synthetic-samples', '32',
                                      '--workers', '0', '--target-ms', target, '--calib-images', '64',
                                      '--results-file', tmp_path / 'budget.json'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / 'budget.json').read_text())
    assert res['cost_unit'] == 'ms' and res['backbone_cost'] == pytest.approx(table.backbone)
    assert res['budget']['unit'] == 'ms' and res['budget']['calibration']['cost'] == pytest.approx(target, rel=0.03)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, warm_drnet):
    """A DRNet whose predictor sends images to different resolutions, saved as a checkpoint with its config."""
    kwargs = dict(DEFAULT_MODEL_KWARGS, num_classes=8)
    model = warm_drnet(size=64, **{k: v for k, v in kwargs.items() if k != 'backbone'})
    path = tmp_path_factory.mktemp('ckpt') / 'model.pth.tar'
    torch.save({'state_dict': model.state_dict(), 'drnet': drnet_config(model, 'drnet', kwargs, (3, 64, 64))}, path)
    return path, model


def _mid_target(model) -> float:
    table = model.cost_table((3, 64, 64))
    return table.predictor + (min(table.backbone) + max(table.backbone)) / 2


@pytest.mark.slow
def test_validate_budget_matches_an_independent_calibration(checkpoint, tmp_path):
    path, model = checkpoint
    target = _mid_target(model)
    proc = run_script('validate.py', ['--checkpoint', path, '--synthetic-samples', '96', '--workers', '0',
                                      '--target-gmacs', target, '--calib-images', '64',
                                      '--results-file', tmp_path / 'r.json'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / 'r.json').read_text())
    budget = res['budget']

    # the same calibration by hand: set_budget on the 64 train-split images, then the validation images routed
    calib_x, _ = _synthetic('train', 64)
    model.resolution_bias.zero_()
    result = timm_drnet.set_budget(model, target, calib_x)
    assert budget['target'] == pytest.approx(target) and budget['unit'] == 'gmacs'
    assert budget['calibration']['source'] == '64 random images of the train split'
    assert budget['calibration']['counts'] == list(result.counts)
    assert budget['calibration']['cost'] == pytest.approx(result.cost) == pytest.approx(target, rel=0.03)
    x, y = _synthetic('validation', 96)
    with torch.no_grad():
        out = model.forward_routed(x)
    model.resolution_bias.zero_()
    assert res['drnet']['cost'] == pytest.approx(out.cost.double().mean().item(), rel=1e-6)
    assert budget['achieved'] == res['drnet']['cost']
    assert res['drnet']['top1'] == pytest.approx(100 * (out.logits.argmax(-1) == y).double().mean().item())
    assert f'Budget: target {target:.4g} GMACs per image; calibrated on 64 random images of the train split' \
        in proc.stdout


@pytest.mark.slow
def test_validate_labeled_budget_matches_an_independent_calibration(checkpoint, tmp_path):
    """--calib-labels: the same labeled set_budget by hand on the 64 train-split images and their labels."""
    path, model = checkpoint
    target = _mid_target(model)
    proc = run_script('validate.py', ['--checkpoint', path, '--synthetic-samples', '96', '--workers', '0',
                                      '--target-gmacs', target, '--calib-images', '64', '--calib-labels',
                                      '--results-file', tmp_path / 'r.json'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / 'r.json').read_text())
    calib = res['budget']['calibration']

    model.resolution_bias.zero_()
    result = timm_drnet.set_budget(model, target, [_synthetic('train', 64)], labeled=True)
    assert calib['labeled'] and calib['counts'] == list(result.counts)
    assert calib['top1'] == pytest.approx(result.top1)
    assert calib['bias'] == pytest.approx(result.bias.tolist(), rel=1e-4, abs=1e-6)
    x, y = _synthetic('validation', 96)
    with torch.no_grad():
        out = model.forward_routed(x)
    model.resolution_bias.zero_()
    assert res['drnet']['cost'] == pytest.approx(out.cost.double().mean().item(), rel=1e-6)
    assert res['drnet']['top1'] == pytest.approx(100 * (out.logits.argmax(-1) == y).double().mean().item())
    assert f'top-1 {result.top1:.2f} there (labeled)' in proc.stderr


@pytest.mark.slow
def test_validate_budget_without_a_train_split_holds_images_out(checkpoint, tmp_path):
    path, model = checkpoint
    rng = np.random.default_rng(0)
    for cls in ('a', 'b'):
        (tmp_path / 'data' / 'validation' / cls).mkdir(parents=True)
        for i in range(20):
            pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / 'data' / 'validation' / cls / f'{i:02d}.png')
    args = ['--checkpoint', path, '--data-dir', tmp_path / 'data', '--workers', '0', '--calib-images', '16']
    proc = run_script('validate.py', [*args, '--target-gmacs', _mid_target(model),
                                      '--results-file', tmp_path / 'r.json'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / 'r.json').read_text())
    assert res['num_images'] == 24 and res['budget']['calibration']['num_images'] == 16
    assert res['budget']['calibration']['source'] == '16 random images held out of the validation split (not evaluated)'
    assert "No separate 'train' split to calibrate the budget on" in proc.stderr

    far = run_script('validate.py', [*args, '--target-gmacs', '100'])
    assert far.returncode == 2 and 'Traceback' not in far.stderr
    errors = [line for line in error_lines(far) if line.startswith('ERROR')]
    assert len(errors) == 1 and 'Budget of 100 gmacs per image is out of reach' in errors[0], errors


def _image_folder(root, n: int, seed: int):
    rng = np.random.default_rng(seed)
    for cls in ('a', 'b'):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / cls / f'{i:02d}.png')


@pytest.mark.slow
def test_validate_cascade_budget_matches_an_independent_calibration(checkpoint, tmp_path):
    """--cascade --target-gmacs on images of --calib-dir: set_cascade_budget by hand on the same images, then the
    evaluated images through the cascade."""
    path, model = checkpoint
    backbone = model.cost_table((3, 64, 64)).backbone
    target = backbone[2] + 0.6 * backbone[1]
    _image_folder(tmp_path / 'calib', 10, seed=1)
    proc = run_script('validate.py', ['--checkpoint', path, '--synthetic-samples', '96', '--workers', '0',
                                      '--cascade', '--target-gmacs', target, '--calib-dir', tmp_path / 'calib',
                                      '--calib-images', '20', '--results-file', tmp_path / 'r.json'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / 'r.json').read_text())
    calib = res['budget']['calibration']
    assert res['drnet']['routing'] == res['budget']['routing'] == 'cascade'
    assert calib['source'] == f'20 random images of {tmp_path / "calib"} (train split if any)'

    from timm.data import create_dataset, create_transform, resolve_data_config
    ds = create_dataset('', root=str(tmp_path / 'calib'))
    ds.transform = create_transform(**resolve_data_config(dict(input_size=(3, 64, 64)), model=model))
    calib_x = torch.stack([ds[i][0] for i in range(len(ds))])
    result = timm_drnet.set_cascade_budget(model, target, calib_x)
    # the loader's uint8 prefetcher normalises on its own path, so confidences (and the half-way threshold) agree
    # to a few 1e-4, the images' routing exactly
    assert calib['threshold'] == pytest.approx(result.threshold, abs=2e-3) and calib['levels'] == [2, 1, 0]
    assert calib['counts'] == list(result.counts) and calib['cost'] == pytest.approx(result.cost)
    model.set_cascade(calib['threshold'])
    x, y = _synthetic('validation', 96)
    with torch.no_grad():
        out = model.forward_routed(x)
    model.set_cascade(None)
    assert res['drnet']['cost'] == pytest.approx(out.cost.double().mean().item(), rel=1e-6)
    assert res['drnet']['top1'] == pytest.approx(100 * (out.logits.argmax(-1) == y).double().mean().item())
    assert 'DRNet (cascade, levels summed)' in proc.stdout and 'cascade over candidates [2, 1, 0]' in proc.stdout


@pytest.mark.slow
def test_validate_cascade_threshold(checkpoint, tmp_path):
    path, model = checkpoint
    proc = run_script('validate.py', ['--checkpoint', path, '--synthetic-samples', '32', '--workers', '0',
                                      '--cascade-threshold', '0.6', '--cascade-levels', '2', '0',
                                      '--results-file', tmp_path / 'r.json'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / 'r.json').read_text())
    model.set_cascade(0.6, (2, 0))
    x, _ = _synthetic('validation', 32)
    with torch.no_grad():
        out = model.forward_routed(x)
    model.set_cascade(None)
    assert res['drnet']['cost'] == pytest.approx(out.cost.double().mean().item(), rel=1e-6)
    assert res['drnet']['counts'] == torch.bincount(out.resolution_index, minlength=3).tolist()

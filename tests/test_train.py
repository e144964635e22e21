""" train.py as users run it: both stages on the built-in data, outputs, checkpoints, the stage-1 loss. """
import csv
import json

import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F

import timm_drnet
from timm_drnet.checkpoint import load_checkpoint_weights, load_training_checkpoint
from timm_drnet.config import DEFAULT_MODEL, DEFAULT_MODEL_KWARGS, build_drnet
from timm_drnet.data import SyntheticTextures

from script_runner import TINY, run_script


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """One tiny two-stage run (``python train.py`` with small sizes); its experiment folder."""
    out = tmp_path_factory.mktemp('train')
    proc = run_script('train.py', [*TINY, '--output', out, '--experiment', 'run'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / 'run', proc


def _summary(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_both_stages_write_their_outputs(run):
    exp, proc = run
    for stage in ('multires', 'drnet'):
        for name in ('last.pth.tar', 'summary.csv', 'args.yaml', 'model.safetensors', 'config.json'):
            assert (exp / stage / name).is_file(), f'{stage}/{name} missing'
    stage1 = _summary(exp / 'multires' / 'summary.csv')
    assert len(stage1) == 1
    assert {'train_ce_1x', 'train_ce_0.75x', 'train_ce_0.5x', 'eval_top1_1x', 'eval_top1_0.5x',
            'eval_top5'} <= set(stage1[0])
    # stage 1's loss is the sum of the per-resolution cross-entropies
    ce = sum(float(stage1[0][f'train_ce_{r}']) for r in ('1x', '0.75x', '0.5x'))
    assert float(stage1[0]['train_loss']) == pytest.approx(ce, rel=1e-6)
    stage2 = _summary(exp / 'drnet' / 'summary.csv')
    assert {'train_ce', 'train_flops_loss', 'train_gmacs', 'train_share_1x', 'train_share_0.75x',
            'train_share_0.5x', 'eval_top1', 'eval_top5', 'eval_gmacs', 'eval_share_0.5x'} <= set(stage2[0])
    shares = sum(float(stage2[0][f'train_share_{r}']) for r in ('1x', '0.75x', '0.5x'))
    assert shares == pytest.approx(1.0)
    # the final table, also saved with the results
    for row in ('static 1x (64 px)', 'static 0.75x (48 px)', 'static 0.5x (32 px)',
                'random, DRNet shares (3 seeds)', 'DRNet (predictor included)', 'oracle'):
        assert row in proc.stdout
    results = json.loads((exp / 'results.json').read_text())
    assert results['num_images'] == 64 and len(results['static']) == 3
    assert (exp / 'results.txt').read_text().strip() in proc.stdout


@pytest.mark.slow
def test_checkpoint_holds_the_full_training_state(run):
    exp, _ = run
    ckpt = torch.load(exp / 'drnet' / 'last.pth.tar', map_location='cpu', weights_only=True)
    assert ckpt['epoch'] == 0 and ckpt['stage'] == 'drnet'
    assert {'state_dict', 'optimizer', 'scheduler', 'rng', 'args', 'saver'} <= set(ckpt)
    assert len(ckpt['rng']) == 1 and {'torch', 'numpy', 'python'} <= set(ckpt['rng'][0])
    cfg = ckpt['drnet']
    assert cfg['model'] == DEFAULT_MODEL and cfg['model_kwargs']['backbone'] == 'test_resnet'
    assert cfg['model_kwargs']['output_stride'] == 16
    assert cfg['resolutions'] == [1.0, 0.75, 0.5] and cfg['num_classes'] == 8 and cfg['input_size'] == [3, 64, 64]
    # the predictor learns at 0.1x the backbone's learning rate
    lrs = {g.get('lr_scale'): g['lr'] for g in ckpt['optimizer']['param_groups']}
    assert lrs[0.1] == pytest.approx(0.1 * lrs[1.0])


@pytest.mark.slow
def test_safetensors_export_loads_with_timm(run):
    exp, _ = run
    model = timm.create_model(f'local-dir:{exp / "drnet"}', pretrained=True).eval()
    ckpt = load_training_checkpoint(exp / 'drnet' / 'last.pth.tar')
    for k, v in ckpt['state_dict'].items():
        assert torch.equal(model.state_dict()[k], v), k
    # rebuilt with the backbone's output stride: same logits as the model the checkpoint config describes
    ref = build_drnet(DEFAULT_MODEL, dict(DEFAULT_MODEL_KWARGS, num_classes=8)).eval()
    ref.load_state_dict(ckpt['state_dict'])
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-6)


@pytest.mark.slow
def test_stage2_from_stage1_checkpoint_needs_no_model_flags(run, tmp_path):
    exp, _ = run
    proc = run_script('train.py', ['--stage', 'drnet', '--initial-checkpoint', exp / 'multires' / 'last.pth.tar',
                                   '--synthetic-samples', '64', '32', '-b', '32', '--epochs', '1', '--workers', '0',
                                   '--output', tmp_path, '--experiment', 's2'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage1 = load_training_checkpoint(exp / 'multires' / 'last.pth.tar')['drnet']
    stage2 = load_training_checkpoint(tmp_path / 's2' / 'drnet' / 'last.pth.tar')['drnet']
    assert stage2['model_kwargs'] == stage1['model_kwargs'] and stage2['resolutions'] == stage1['resolutions']


@pytest.mark.slow
def test_stage1_step_is_sgd_on_the_sum_of_per_resolution_losses(tmp_path):
    """One stage-1 step over the whole (32-image) set equals a hand-written SGD step on sum_j CE_j."""
    torch.manual_seed(0)
    kwargs = dict(DEFAULT_MODEL_KWARGS, num_classes=8)
    init = build_drnet(DEFAULT_MODEL, kwargs)
    safetensors.torch.save_file(init.state_dict(), str(tmp_path / 'init.safetensors'))
    lr = 0.05
    proc = run_script('train.py', [
        '--stage', 'multires', '--initial-checkpoint', tmp_path / 'init.safetensors', '--synthetic-samples', '32', '32',
        '-b', '32', '--epochs', '1', '--no-aug', '--opt', 'momentum', '--sched', 'constant', '--warmup-epochs', '0',
        '--lr', lr, '--weight-decay', '0', '--workers', '0', '--output', tmp_path, '--experiment', 'step'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = load_training_checkpoint(tmp_path / 'step' / 'multires' / 'last.pth.tar')['state_dict']

    data = SyntheticTextures('train', num_samples=32)
    x = (torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5  # test_resnet mean = std = 0.5
    y = torch.from_numpy(data.targets)
    init.train()
    loss = sum(F.cross_entropy(init(x, resolution_index=j), y) for j in range(3))
    loss.backward()
    with torch.no_grad():
        for name, p in init.named_parameters():
            if name.startswith('predictor.'):
                assert torch.equal(trained[name], p), f'{name}: the frozen predictor changed'
            else:
                assert torch.allclose(trained[name], p - lr * p.grad, atol=2e-5), name
        for name, b in init.named_buffers():
            if 'running' in name and not name.startswith('predictor.'):
                assert torch.allclose(trained[name], b, atol=1e-5), name


@pytest.mark.slow
def test_freeze_backbone_trains_the_predictor_only(run, tmp_path):
    exp, _ = run
    start = exp / 'multires' / 'last.pth.tar'
    proc = run_script('train.py', ['--stage', 'drnet', '--initial-checkpoint', start, '--freeze-backbone',
                                   '--synthetic-samples', '64', '32', '-b', '32', '--epochs', '1', '--workers', '0',
                                   '--output', tmp_path, '--experiment', 'frozen'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = load_training_checkpoint(start)['state_dict']
    after = load_training_checkpoint(tmp_path / 'frozen' / 'drnet' / 'last.pth.tar')['state_dict']
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not before['predictor_trained'] and after['predictor_trained']  # stage 1 left it untrained
    changed.discard('predictor_trained')
    assert changed and all(k.startswith('predictor.') for k in changed), sorted(changed)[:5]


@pytest.mark.slow
def test_predictor_grad_flag_is_used_and_saved(run, tmp_path):
    exp, _ = run
    proc = run_script('train.py', ['--stage', 'drnet', '--initial-checkpoint', exp / 'multires' / 'last.pth.tar',
                                   '--predictor-grad', 'all', '--freeze-backbone', '--synthetic-samples', '64', '32',
                                   '-b', '32', '--epochs', '1', '--workers', '0', '--output', tmp_path,
                                   '--experiment', 'all'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = load_training_checkpoint(tmp_path / 'all' / 'drnet' / 'last.pth.tar')['drnet']
    assert cfg['model_kwargs']['predictor_grad'] == 'all'
    model = timm.create_model(f"local-dir:{tmp_path / 'all' / 'drnet'}")
    assert model.predictor_grad == 'all'


@pytest.mark.slow
def test_nan_loss_stops_with_a_message_naming_the_step(tmp_path):
    proc = run_script('train.py', ['--stage', 'multires', '--synthetic-samples', '96', '32', '-b', '32',
                                   '--epochs', '2', '--lr', '1e30', '--sched', 'constant', '--warmup-epochs', '0',
                                   '--workers', '0', '--output', tmp_path, '--experiment', 'nan'])
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr
    assert 'the training loss became' in proc.stderr and 'stage multires, epoch 1/2, step' in proc.stderr
    assert 'no checkpoint was written yet' in proc.stderr
    assert not (tmp_path / 'nan' / 'multires' / 'last.pth.tar').exists()


@pytest.mark.slow
def test_nan_loss_keeps_the_last_good_checkpoint(tmp_path):
    """Epoch 1 trains at a small warm-up lr and is saved; the lr of 1e30 from epoch 2 on makes the loss NaN."""
    proc = run_script('train.py', ['--stage', 'multires', '--synthetic-samples', '64', '32', '-b', '32',
                                   '--epochs', '3', '--lr', '1e30', '--sched', 'step', '--decay-epochs', '100',
                                   '--warmup-epochs', '1', '--warmup-lr', '1e-3', '--no-sched-on-updates',
                                   '--workers', '0', '--output', tmp_path, '--experiment', 'nan'])
    last = tmp_path / 'nan' / 'multires' / 'last.pth.tar'
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('ERROR')]
    assert len(errors) == 1 and 'the training loss became nan in stage multires, epoch 2/3, step ' in errors[0]
    assert f'the last good checkpoint is {last}' in errors[0]
    ckpt = load_training_checkpoint(last)
    assert ckpt['epoch'] == 0 and not (last.parent / 'checkpoint-1.pth.tar').exists()
    model = build_drnet(DEFAULT_MODEL, dict(DEFAULT_MODEL_KWARGS, num_classes=8))
    load_checkpoint_weights(model, ckpt, last)
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_two_sided_flops_loss_penalises_both_sides_of_alpha():
    costs = (4.0, 2.0, 1.0)
    cheap = torch.tensor([[0., 0., 1.], [0., 0., 1.]])  # average 1.0
    dear = torch.tensor([[1., 0., 0.], [1., 0., 0.]])  # average 4.0
    cap, held = timm_drnet.FlopsLoss(2.5, eta=0.5), timm_drnet.FlopsLoss(2.5, eta=0.5, two_sided=True)
    assert cap(cheap, costs).item() == 0.0
    assert held(cheap, costs).item() == pytest.approx(0.5 * (2.5 - 1.0) / 3.0)
    assert cap(dear, costs).item() == pytest.approx(held(dear, costs).item()) == pytest.approx(0.5 * 1.5 / 3.0)

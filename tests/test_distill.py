""" Cross-resolution distillation in stage 1 and the predictor trained on per-resolution losses, against hand
computations. """
import pytest
import torch
import torch.nn.functional as F
import timm

import timm_drnet
from timm_drnet import MultiResolutionLoss
from timm_drnet.config import DEFAULT_MODEL, DEFAULT_MODEL_KWARGS, build_drnet
from timm_drnet.train import PredictorFitSettings, ResolutionOutputs, fit_predictor, resolution_targets

from script_runner import TINY, run_script


def _kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """t^2 KL(softmax(teacher / t) || softmax(student / t)), batch mean, written out."""
    p = torch.softmax(teacher / t, -1)
    return t * t * (p * (torch.log(p) - torch.log_softmax(student / t, -1))).sum(-1).mean()


def _logits(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = [torch.randn(6, 5, generator=g, requires_grad=True) for _ in range(3)]
    return z, torch.randint(0, 5, (6,), generator=g)


@pytest.mark.parametrize('t', [1.0, 4.0])
def test_inplace_distillation_against_hand_computation(t):
    z, y = _logits()
    parts = MultiResolutionLoss(3, distill='inplace', weight=0.5, temperature=t)(z, y)
    ce = sum(F.cross_entropy(zj, y) for zj in z)
    kd = 0.5 * (_kl(z[1], z[0].detach(), t) + _kl(z[2], z[0].detach(), t))
    torch.testing.assert_close(parts.total, ce + kd)
    torch.testing.assert_close(parts.distill, kd)
    # the teacher is detached: the full resolution's gradient is its own cross-entropy's only
    parts.total.backward()
    own = torch.autograd.grad(F.cross_entropy(z[0], y), z[0])[0]
    torch.testing.assert_close(z[0].grad, own)


def test_ensemble_distillation_against_hand_computation():
    z, y = _logits(1)
    loss = MultiResolutionLoss(3, distill='ensemble', weight=1.0, temperature=2.0)
    with torch.no_grad():
        loss.ensemble_weights.copy_(torch.tensor([0.5, 0.0, -0.5]))
    parts = loss(z, y)
    w = torch.softmax(torch.tensor([0.5, 0.0, -0.5]), 0)
    ens = sum(w[j] * z[j].detach() for j in range(3))
    ce = sum(F.cross_entropy(zj, y) for zj in z)
    kd = sum(_kl(zj, ens, 2.0) for zj in z) + _kl(z[1], z[0].detach(), 2.0) + _kl(z[2], z[0].detach(), 2.0) + \
        _kl(z[2], z[1].detach(), 2.0)
    torch.testing.assert_close(parts.total, ce + F.cross_entropy(ens, y) + kd)
    parts.total.backward()
    # the ensemble weights learn from the ensemble's cross-entropy only (its logits are detached)
    w_param = torch.tensor([0.5, 0.0, -0.5], requires_grad=True)
    ens_ce = F.cross_entropy(sum(torch.softmax(w_param, 0)[j] * z[j].detach() for j in range(3)), y)
    torch.testing.assert_close(loss.ensemble_weights.grad, torch.autograd.grad(ens_ce, w_param)[0])


def test_teacher_distillation_and_errors():
    z, y = _logits(2)
    teacher = torch.randn(6, 5)
    parts = MultiResolutionLoss(3, distill='teacher', weight=2.0)(z, y, teacher)
    kd = 2.0 * sum(_kl(zj, teacher, 1.0) for zj in z)
    torch.testing.assert_close(parts.distill, kd)
    with pytest.raises(ValueError, match="needs the teacher's logits"):
        MultiResolutionLoss(3, distill='teacher')(z, y)
    with pytest.raises(ValueError, match="Unknown distill 'big'"):
        MultiResolutionLoss(3, distill='big')
    plain = MultiResolutionLoss(3)(z, y)
    torch.testing.assert_close(plain.total, sum(F.cross_entropy(zj, y) for zj in z))
    assert plain.distill.item() == 0


def test_resolution_targets_by_hand():
    losses = torch.tensor([[0.1, 0.2, 2.0], [0.3, 0.3, 0.3]])
    costs = torch.tensor([4.0, 2.0, 1.0])
    q = resolution_targets(losses, costs, cost_weight=0.5, temperature=0.5)
    by_hand = torch.softmax(-(losses + 0.5 * costs / 4.0) / 0.5, -1)
    torch.testing.assert_close(q, by_hand)
    assert q[1].argmax() == 2  # equal losses: the cheapest


def test_fit_predictor_learns_a_ranking_the_thumbnails_carry():
    """Images whose smallest resolution loses a lot carry a visible mark (bright thumbnails): the predictor trained on
    the per-resolution losses must rank them first for the full resolution, and be marked trained."""
    torch.manual_seed(0)
    model = build_drnet(DEFAULT_MODEL, dict(DEFAULT_MODEL_KWARGS, num_classes=4)).eval()
    n = 256
    hard = torch.rand(n) < 0.3
    thumbs = (torch.randn(n, 3, 32, 32) * 0.3 + hard.float().view(-1, 1, 1, 1) * 1.5).half()
    losses = torch.stack([torch.full((n,), 0.1), torch.full((n,), 0.3), torch.where(hard, 3.0, 0.2)], 1)
    train = ResolutionOutputs(thumbs, losses, losses < 1.0)
    assert not model.predictor_trained
    history = fit_predictor(model, train, (4.0, 2.0, 1.0), PredictorFitSettings(epochs=8, batch_size=32),
                            monitor=train)
    assert model.predictor_trained and history[-1]['loss'] < history[0]['loss']
    with torch.no_grad():
        s = model.predictor.eval()(thumbs.float())
    pref = s[:, 0] - s[:, 2]
    auc = (pref[hard][:, None] > pref[~hard][None]).float().mean().item()
    assert auc > 0.95


@pytest.mark.slow
def test_scripts_distill_and_train_the_predictor(tmp_path):
    proc = run_script('train.py', [*TINY, '--stage', 'multires', '--distill', 'inplace', '--distill-temperature', '4',
                                   '--output', tmp_path, '--experiment', 'kd'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage1 = tmp_path / 'kd' / 'multires' / 'last.pth.tar'
    ckpt = timm_drnet.load_state_dict_file(stage1)
    assert ckpt['args']['distill'] == 'inplace' and ckpt['args']['distill_temperature'] == 4.0
    assert 'train_distill' in (tmp_path / 'kd' / 'multires' / 'summary.csv').read_text().splitlines()[0]
    proc = run_script('train.py', ['--stage', 'predictor', '--initial-checkpoint', stage1, '--synthetic-samples', '64',
                                   '64', '-b', '32', '--epochs', '2', '--workers', '0', '--opt', 'adamw', '--lr', '1e-3',
                                   '--output', tmp_path, '--experiment', 'pred'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Predictor epoch 2/2' in proc.stderr and 'DRNet (predictor included)' in proc.stdout
    model = timm.create_model(f"local-dir:{tmp_path / 'pred' / 'predictor'}", pretrained=True)
    assert model.predictor_trained
    before, after = ckpt['state_dict'], model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])} - {'predictor_trained'}
    assert changed and all(k.startswith('predictor.') for k in changed)  # the backbone stayed frozen

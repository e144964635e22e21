""" validate.py and the routing evaluation behind it, against independent computations. """
import dataclasses
import json

import pytest
import torch
from PIL import Image

from timm_drnet import CostTable
from timm_drnet.config import DEFAULT_MODEL_KWARGS, drnet_config
from timm_drnet.data import SyntheticTextures
from timm_drnet.evaluate import Predictions, oracle_routing, random_routing, summarize

from script_runner import run_script


def test_oracle_picks_the_smallest_correct_resolution():
    correct = torch.tensor([
        [1, 1, 0, 0, 1],  # 1x
        [1, 0, 1, 0, 1],  # 0.75x
        [0, 0, 1, 0, 1],  # 0.5x
    ], dtype=torch.bool)
    assert oracle_routing(correct).tolist() == [1, 0, 2, 2, 2]


def test_random_routing_keeps_the_shares_and_averages_to_the_share_weighted_accuracy():
    g = torch.Generator().manual_seed(0)
    n = 4000
    correct = torch.rand(3, n, generator=g) < torch.tensor([[0.9], [0.7], [0.4]])
    assignment = torch.randint(0, 3, (n,), generator=g)
    shares = torch.bincount(assignment, minlength=3).double() / n
    expected = 100 * (shares * correct.double().mean(dim=1)).sum().item()
    accs = random_routing(correct, assignment, seeds=range(5))
    assert len(set(accs)) > 1  # seeds differ
    for acc in accs:
        assert acc == pytest.approx(expected, abs=1.5)  # binomial std of the mix is about 0.6 points


def test_summarize_costs_and_accuracies():
    target = torch.zeros(4, dtype=torch.long)
    preds = Predictions(
        target=target,
        routed_index=torch.tensor([0, 2, 2, 1]),
        routed_top1=torch.tensor([True, True, False, True]),
        routed_topk=torch.ones(4, dtype=torch.bool),
        routed_cost=torch.tensor([4.5, 1.5, 1.5, 2.5], dtype=torch.float64),  # backbone + 0.5 predictor
        static_top1=torch.tensor([[1, 1, 1, 1], [0, 1, 0, 1], [0, 1, 0, 0]], dtype=torch.bool),
        static_topk=torch.ones(3, 4, dtype=torch.bool),
    )
    table = CostTable((3, 64, 64), (4.0, 2.0, 1.0), 0.5)
    s = summarize(preds, table, (1.0, 0.75, 0.5), [(64, 64), (48, 48), (32, 32)], random_seeds=3)
    assert s['drnet']['cost'] == pytest.approx((4 + 1 + 1 + 2) / 4 + 0.5)
    assert s['drnet']['top1'] == pytest.approx(75.0)
    assert s['drnet']['shares'] == pytest.approx([0.25, 0.25, 0.5])
    assert s['drnet']['top1_per_resolution'] == pytest.approx([100.0, 100.0, 50.0])
    assert [r['top1'] for r in s['static']] == pytest.approx([100.0, 50.0, 25.0])
    assert s['random']['cost'] == pytest.approx(2.0)  # same shares as the DRNet, no predictor
    assert s['oracle']['top1'] == pytest.approx(100.0)
    assert s['oracle']['cost'] == pytest.approx((4 + 1 + 4 + 2) / 4)  # images 0, 2 need 1x, 1 0.5x, 3 0.75x


@pytest.fixture
def checkpoint(tmp_path, warm_drnet):
    """A DRNet whose predictor sends images to different resolutions, saved as a checkpoint with its config."""
    kwargs = dict(DEFAULT_MODEL_KWARGS, num_classes=8)
    model = warm_drnet(size=64, **{k: v for k, v in kwargs.items() if k != 'backbone'})
    path = tmp_path / 'model.pth.tar'
    torch.save({'state_dict': model.state_dict(), 'drnet': drnet_config(model, 'drnet', kwargs, (3, 64, 64))}, path)
    return path, model


@pytest.mark.slow
def test_validate_reports_match_an_independent_evaluation(checkpoint, tmp_path):
    path, model = checkpoint
    plots = tmp_path / 'plots'
    proc = run_script('validate.py', ['--checkpoint', path, '--synthetic-samples', '96', '--workers', '0',
                                      '--plot', plots, '--results-file', tmp_path / 'new_dir' / 'results.json'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / 'new_dir' / 'results.json').read_text())

    data = SyntheticTextures('validation', num_samples=96)
    x = (torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    y = torch.from_numpy(data.targets)
    with torch.no_grad():
        static = torch.stack([model(x, resolution_index=j).argmax(-1) == y for j in range(3)])
        out = model.forward_routed(x)
    shares = torch.bincount(out.resolution_index, minlength=3).double() / 96
    assert (shares > 0).sum() >= 2, 'the test model should route to several resolutions'
    table = model.cost_table((3, 64, 64))

    assert res['drnet']['top1'] == pytest.approx(100 * (out.logits.argmax(-1) == y).double().mean().item())
    assert res['drnet']['shares'] == pytest.approx(shares.tolist())
    assert res['drnet']['cost'] == pytest.approx((shares * torch.tensor(table.backbone)).sum().item() + table.predictor)
    assert [r['top1'] for r in res['static']] == pytest.approx((100 * static.double().mean(1)).tolist())
    assert res['oracle']['top1'] == pytest.approx(100 * static.any(0).double().mean().item())
    assert res['random']['cost'] == pytest.approx((shares * torch.tensor(table.backbone)).sum().item())
    # random routing: seed s shuffles the DRNet's own assignment with torch.randperm(generator=manual_seed(s))
    correct = static  # (3, N) per resolution
    seeds_top1 = []
    for seed in range(3):
        perm = torch.randperm(96, generator=torch.Generator().manual_seed(seed))
        shuffled = out.resolution_index[perm]
        seeds_top1.append(100 * correct[shuffled, torch.arange(96)].double().mean().item())
    assert res['random']['top1'] == pytest.approx(seeds_top1)
    mean = sum(seeds_top1) / 3
    assert res['random']['top1_std'] == pytest.approx((sum((t - mean) ** 2 for t in seeds_top1) / 3) ** 0.5)
    for name in ('accuracy_vs_gmacs.png', 'examples.png'):
        with Image.open(plots / name) as img:
            assert img.size[0] > 300 and img.size[1] > 200
    assert 'DRNet (predictor included)' in proc.stdout


@pytest.mark.slow
def test_default_validate_reports_drnet_only(checkpoint):
    path, _ = checkpoint
    proc = run_script('validate.py', ['--checkpoint', path, '--synthetic-samples', '32', '--workers', '0'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'DRNet (predictor included)' in proc.stdout and 'DRNet top-1 per chosen resolution' in proc.stdout
    assert 'static' not in proc.stdout and 'random' not in proc.stdout and 'oracle' not in proc.stdout


def test_a_cascade_is_compared_with_random_routing_at_its_own_cost():
    """A cascade pays for every level it ran: its random baseline is the static curve at the cascade's cost, not a
    shuffle of its final shares (which would cost less)."""
    preds = Predictions(
        target=torch.zeros(4, dtype=torch.long),
        routed_index=torch.tensor([2, 2, 0, 1]),
        routed_top1=torch.tensor([True, True, True, False]),
        routed_topk=torch.ones(4, dtype=torch.bool),
        routed_cost=torch.tensor([1.0, 1.0, 7.0, 3.0], dtype=torch.float64),  # levels summed: mean 3.0
        static_top1=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool),
        static_topk=torch.ones(3, 4, dtype=torch.bool),
    )
    table = CostTable((3, 64, 64), (4.0, 2.0, 1.0), 0.0)
    s = summarize(preds, table, (1.0, 0.75, 0.5), [(64, 64), (48, 48), (32, 32)], routing='cascade')
    assert s['random']['kind'] == 'static_curve' and s['random']['cost'] == pytest.approx(3.0)
    # 3.0 GMACs lies halfway between the 0.75x (2.0, 75 %) and 1x (4.0, 100 %) candidates
    assert s['random']['top1_mean'] == pytest.approx(87.5)
    assert s['random']['shares'] == pytest.approx([0.5, 0.5, 0.0])
    dearer = dataclasses.replace(preds, routed_cost=torch.full((4,), 6.0, dtype=torch.float64))
    over = summarize(dearer, table, (1.0, 0.75, 0.5), [(64, 64), (48, 48), (32, 32)], routing='cascade')
    assert 'random' not in over  # dearer than every static model: no random routing costs as much

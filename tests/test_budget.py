""" Budgets at inference: set_budget calibration, the Lagrangian solver, ordering, errors, persistence."""
import pytest
import torch
import timm

import timm_drnet
from timm_drnet import CostTable, cost_offsets, solve_budget, solve_budget_top1

SIZE = 96


def reachable(table: CostTable):
    return min(table.backbone) + table.predictor, max(table.backbone) + table.predictor


def route_costs(model, x) -> torch.Tensor:
    """Per-image cost of the model's own routing (forward_routed), an independent check of the calibration."""
    with torch.no_grad():
        return model.forward_routed(x).cost.cpu()


@pytest.fixture
def model(warm_drnet):
    return warm_drnet()


@pytest.mark.parametrize('frac', [0.05, 0.25, 0.5, 0.75, 0.95])
def test_target_met_within_3_percent(model, varied_images, device, frac):
    model.to(device)
    x = varied_images(64, SIZE).to(device)
    lo, hi = reachable(model.cost_table((3, SIZE, SIZE)))
    target = lo + frac * (hi - lo)
    result = timm_drnet.set_budget(model, target, x)
    cost = route_costs(model, x).mean().item()
    assert abs(cost - target) <= 0.03 * target
    assert cost == pytest.approx(result.cost, rel=1e-6)
    assert sum(result.counts) == 64 and result.unit == 'gmacs' and result.reachable == pytest.approx((lo, hi))


def test_solver_is_optimal_against_dense_lambda_grid():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(40, 3, generator=g, dtype=torch.float64)
    costs = torch.tensor([4.1, 2.5, 1.1], dtype=torch.float64)
    grid = torch.linspace(-40, 40, 40001, dtype=torch.float64)
    grid_costs = costs[(scores[None] - grid[:, None, None] * costs).argmax(-1)].mean(-1)  # (L,)
    for target in [1.1, 1.3, 1.9, 2.5, 3.0, 3.77, 4.1]:
        lam = solve_budget(scores, costs, target)
        cost = costs[(scores + cost_offsets(costs, lam)).argmax(-1)].mean().item()
        assert abs(cost - target) <= (grid_costs - target).abs().min().item() + 1e-12


def test_images_move_to_cheaper_resolutions_in_order_of_preference(model, varied_images):
    """Tighter budgets only ever lower an image's resolution; with two candidates the images kept at the
    large resolution are exactly those the predictor prefers it for most (largest s_0 - s_1)."""
    x = varied_images(48, SIZE)
    lo, hi = reachable(model.cost_table((3, SIZE, SIZE)))
    per_image = []
    for frac in [0.9, 0.6, 0.4, 0.1]:
        timm_drnet.set_budget(model, lo + frac * (hi - lo), x)
        per_image.append(route_costs(model, x))
    for looser, tighter in zip(per_image, per_image[1:]):
        assert (tighter <= looser).all()
        assert (tighter < looser).any()

    g = torch.Generator().manual_seed(3)
    scores = torch.randn(30, 2, generator=g, dtype=torch.float64)
    costs = torch.tensor([3.0, 1.0], dtype=torch.float64)
    margin_rank = (scores[:, 0] - scores[:, 1]).argsort(descending=True)
    for k in [0, 7, 15, 29, 30]:
        lam = solve_budget(scores, costs, (k * 3.0 + (30 - k) * 1.0) / 30)
        large = (scores + cost_offsets(costs, lam)).argmax(-1) == 0
        assert set(large.nonzero().flatten().tolist()) == set(margin_rank[:k].tolist())


def test_unreachable_targets_name_the_range(model, varied_images):
    x = varied_images(16, SIZE)
    lo, hi = reachable(model.cost_table((3, SIZE, SIZE)))
    for target in [lo * 0.9, hi * 1.1]:
        with pytest.raises(ValueError, match='out of reach') as e:
            timm_drnet.set_budget(model, target, x)
        assert f'{lo:.4g}' in str(e.value) and f'{hi:.4g}' in str(e.value)
    assert torch.count_nonzero(model.resolution_bias) == 0  # left unchanged


def test_too_few_images_for_the_tolerance(model, varied_images):
    x = varied_images(2, SIZE)
    lo, hi = reachable(model.cost_table((3, SIZE, SIZE)))
    with pytest.raises(ValueError, match='calibrate on more images'):
        timm_drnet.set_budget(model, lo + 0.25 * (hi - lo), x)
    assert torch.count_nonzero(model.resolution_bias) == 0


def test_bias_is_saved_in_the_state_dict(model, varied_images):
    x = varied_images(32, SIZE)
    lo, hi = reachable(model.cost_table((3, SIZE, SIZE)))
    timm_drnet.set_budget(model, lo + 0.4 * (hi - lo), x)
    state = model.state_dict()
    assert torch.equal(state['resolution_bias'], model.resolution_bias)
    fresh = timm.create_model('drnet', backbone='test_resnet', predictor='mobile', num_classes=5).eval()
    fresh.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(fresh.forward_routed(x).cost, model.forward_routed(x).cost, rtol=0, atol=0)


def test_loader_batches_and_latency_unit(model, varied_images):
    x = varied_images(40, SIZE)
    lo, hi = reachable(model.cost_table((3, SIZE, SIZE)))
    target = lo + 0.5 * (hi - lo)
    a = timm_drnet.set_budget(model, target, x)
    loader = [(x[i:i + 16], torch.zeros(len(x[i:i + 16]))) for i in range(0, 40, 16)]
    b = timm_drnet.set_budget(model, target, iter(loader), batch_size=7)  # a one-shot iterable of (images, targets)
    assert a.cost == pytest.approx(b.cost) and a.counts == b.counts

    model.set_cost_table(CostTable((3, SIZE, SIZE), (9.0, 5.0, 2.0), 0.5, 'ms'))
    result = timm_drnet.set_budget(model, 6.0, x)
    assert result.unit == 'ms' and result.reachable == (2.5, 9.5)
    assert abs(route_costs(model, x).mean().item() - 6.0) <= 0.03 * 6.0


def test_bad_calibration_input(model, varied_images):
    with pytest.raises(ValueError, match='at least one calibration image'):
        timm_drnet.set_budget(model, 0.03, [])
    with pytest.raises(ValueError, match='share one input size'):
        timm_drnet.set_budget(model, 0.03, [varied_images(4, SIZE), varied_images(4, 112)])
    with pytest.raises(TypeError, match='tensors'):
        timm_drnet.set_budget(model, 0.03, ['not an image'])
    model.eval_gumbel = True
    with pytest.raises(ValueError, match='eval_gumbel'):
        timm_drnet.set_budget(model, 0.03, varied_images(4, SIZE))


def test_labeled_calibration_uses_a_resolution_the_scores_never_prefer():
    """Scores of the middle resolution below both others: no Lagrangian offset ever routes an image there, so the
    plain calibration mixes the extremes. With labels saying the middle one is right wherever the dearest is,
    the labeled search sends every image there, at exactly its cost."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(60, 3, generator=g, dtype=torch.float64)
    scores[:, 1] = torch.minimum(scores[:, 0], scores[:, 2]) - 1
    costs = torch.tensor([4.0, 2.5, 1.0], dtype=torch.float64)
    correct = torch.ones(60, 3, dtype=torch.bool)
    correct[::2, 2] = False  # the cheapest is wrong on every other image
    target = 2.5

    plain = (scores + cost_offsets(costs, solve_budget(scores, costs, target))).argmax(-1)
    assert not (plain == 1).any()
    assert correct.gather(1, plain[:, None]).float().mean() < 1

    offsets, lam = solve_budget_top1(scores, costs, target, correct)
    index = (scores + offsets + cost_offsets(costs, lam)).argmax(-1)
    assert (index == 1).all() and costs[index].mean().item() == target


def test_labeled_set_budget_against_the_routed_model(model, varied_images):
    """Cost and top-1 that labeled calibration reports, checked against forward_routed (the batch split), and
    never below the unlabeled calibration's top-1 on the same images."""
    x = varied_images(64, SIZE)
    y = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(0))
    lo, hi = reachable(model.cost_table((3, SIZE, SIZE)))
    for frac in (0.3, 0.6):
        target = lo + frac * (hi - lo)
        top1 = []
        for labeled in (False, True):
            result = timm_drnet.set_budget(model, target, [(x[:40], y[:40]), (x[40:], y[40:])], batch_size=16,
                                           labeled=labeled)
            with torch.no_grad():
                out = model.forward_routed(x)
            assert abs(out.cost.mean().item() - target) <= 0.03 * target
            assert out.cost.mean().item() == pytest.approx(result.cost, rel=1e-6)
            top1.append(100 * (out.logits.argmax(-1) == y).float().mean().item())
        assert result.top1 == pytest.approx(top1[1])
        assert top1[1] >= top1[0]


def test_labeled_calibration_needs_class_indices(model, varied_images):
    x = varied_images(8, SIZE)
    lo, hi = reachable(model.cost_table((3, SIZE, SIZE)))
    target = (lo + hi) / 2
    bad_inputs = ((x, 'NoneType'), ([(x, torch.rand(8))], 'torch.float32'),
                  ([(x, torch.zeros(5, dtype=torch.long))], '(5,)'))
    for bad, what in bad_inputs:
        with pytest.raises(ValueError, match='one integer class index per image') as e:
            timm_drnet.set_budget(model, target, bad, labeled=True)
        assert what in str(e.value) and '(8, 3, 96, 96)' in str(e.value)
    assert torch.count_nonzero(model.resolution_bias) == 0

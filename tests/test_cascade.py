""" Confidence cascade: routing against a per-image hand computation, costs, calibration, errors."""
import pytest
import torch
import torch.nn.functional as F

import timm_drnet
from timm_drnet import cascade_stops, solve_cascade_threshold

SIZE = 96


@pytest.fixture
def model(warm_drnet):
    return warm_drnet()


def static_outputs(model, x):
    """(m, B, classes) logits and (m, B) top class probability of every image at every candidate."""
    with torch.no_grad():
        logits = torch.stack([model(x, resolution_index=j) for j in range(model.num_resolutions)])
    return logits, logits.softmax(-1).amax(-1)


def hand_cascade(conf, levels, threshold):
    """Per image, in plain Python: the candidate that answers and the levels it ran."""
    answers, ran = [], []
    for i in range(conf.shape[1]):
        path = []
        for j in levels:
            path.append(j)
            if conf[j, i] >= threshold:
                break
        answers.append(path[-1])
        ran.append(path)
    return answers, ran


def no_predictor(model):
    def fail(*_):
        raise AssertionError('the cascade must not run the predictor')
    return model.predictor.register_forward_pre_hook(fail)


@pytest.mark.parametrize('levels', [None, (2, 0), (1, 2, 0)])
def test_routing_matches_hand_cascade(model, varied_images, device, levels):
    model.to(device)
    x = varied_images(24, SIZE).to(device)
    logits, conf = static_outputs(model, x)
    threshold = conf.median().item()
    model.set_cascade(threshold, levels)
    order = levels or (2, 1, 0)
    answers, ran = hand_cascade(conf.cpu(), order, threshold)
    assert len(set(answers)) > 1  # the threshold splits the images
    backbone = model.cost_table((3, SIZE, SIZE)).backbone
    hook = no_predictor(model)
    with torch.no_grad():
        out = model.forward_routed(x)
        plain = model(x)
    hook.remove()
    assert out.resolution_index.tolist() == answers
    expected = torch.stack([logits[j, i] for i, j in enumerate(answers)])
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain, expected, atol=1e-5, rtol=1e-5)
    assert out.cost.cpu().tolist() == pytest.approx([sum(backbone[j] for j in path) for path in ran], rel=1e-6)
    assert out.hard.sum(1).eq(1).all() and out.hard.argmax(1).tolist() == answers


def test_features_follow_the_cascade(model, varied_images):
    """Unpooled features of the level that answered, on the full-resolution grid; its logits stop the cascade."""
    x = varied_images(16, SIZE)
    _, conf = static_outputs(model, x)
    model.set_cascade(conf.median().item())
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model.forward_routed(x)
        per_res = [model.forward_features(x, resolution_index=j) for j in range(model.num_resolutions)]
    assert len(set(out.resolution_index.tolist())) > 1
    grid = per_res[0].shape[-2:]
    expected = torch.stack([F.interpolate(per_res[j][i:i + 1], size=grid, mode='bilinear')[0]
                            for i, j in enumerate(out.resolution_index.tolist())])
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-5)
    answered = torch.cat([model.forward_head(per_res[j][i:i + 1]) for i, j in enumerate(out.resolution_index.tolist())])
    torch.testing.assert_close(answered, out.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('levels', [None, (2, 0)])
def test_one_image_at_a_time(model, varied_images, levels):
    """A batch of one takes a path of its own (no masks or scatters): each image alone gets the hand cascade's
    level, cost, logits and features, its confidence taken from its own batch-1 logits at every candidate."""
    x = varied_images(12, SIZE)
    with torch.no_grad():
        logits = torch.stack([torch.cat([model(x[i:i + 1], resolution_index=j) for i in range(len(x))])
                              for j in range(model.num_resolutions)])
        maps = [[model.forward_features(x[i:i + 1], resolution_index=j) for j in range(model.num_resolutions)]
                for i in range(len(x))]
    conf = logits.softmax(-1).amax(-1)
    threshold = conf.median().item()
    model.set_cascade(threshold, levels)
    answers, ran = hand_cascade(conf, levels or (2, 1, 0), threshold)
    assert len(set(answers)) > 1
    backbone = model.cost_table((3, SIZE, SIZE)).backbone
    with torch.no_grad():
        outs = [model.forward_routed(x[i:i + 1]) for i in range(len(x))]
        feats = [model.forward_features(x[i:i + 1]) for i in range(len(x))]
    assert [o.resolution_index.tolist() for o in outs] == [[j] for j in answers]
    for i, (out, feat, j) in enumerate(zip(outs, feats, answers)):
        assert torch.equal(out.logits, logits[j, i:i + 1])
        assert out.cost.dtype == torch.float32
        assert out.cost.tolist() == pytest.approx([sum(backbone[k] for k in ran[i])])
        assert torch.equal(out.hard, F.one_hot(torch.tensor([j]), model.num_resolutions).float())
        grid = maps[i][0].shape[-2:]
        torch.testing.assert_close(feat, F.interpolate(maps[i][j], size=grid, mode='bilinear'), atol=1e-6, rtol=1e-6)


def test_threshold_extremes_and_switching_off(model, varied_images):
    x = varied_images(8, SIZE)
    backbone = model.cost_table((3, SIZE, SIZE)).backbone
    with torch.no_grad():
        model.set_cascade(0.)
        first = model.forward_routed(x)
        model.set_cascade(1.5)
        last = model.forward_routed(x)
        model.set_cascade(None)
        routed = model.forward_routed(x)
    assert first.resolution_index.eq(2).all() and first.cost.tolist() == pytest.approx([backbone[2]] * 8)
    assert last.resolution_index.eq(0).all() and last.cost.tolist() == pytest.approx([sum(backbone)] * 8)
    predictor = model.cost_table((3, SIZE, SIZE)).predictor
    assert routed.cost.tolist() == pytest.approx([backbone[j] + predictor for j in routed.resolution_index])


def test_training_ignores_the_cascade(model, varied_images):
    x = varied_images(8, SIZE)
    model.set_cascade(0.)
    model.train()
    out = model.forward_routed(x)
    assert not torch.allclose(out.probs, torch.nn.functional.one_hot(out.resolution_index, 3).float())


def test_empty_batch(model):
    model.set_cascade(0.5)
    with torch.no_grad():
        out = model.forward_routed(torch.zeros(0, 3, SIZE, SIZE))
    assert out.logits.shape == (0, 5) and out.cost.shape == (0,)


def test_stops_and_solver_against_brute_force():
    g = torch.Generator().manual_seed(0)
    conf = torch.rand(50, 3, generator=g, dtype=torch.float64)
    level_costs = torch.tensor([1.0, 1.8, 3.5], dtype=torch.float64)
    cum = [1.0, 2.8, 6.3]

    def brute(t: float) -> float:
        total = 0.
        for row in conf.tolist():
            k = 0
            while k < 2 and row[k] < t:
                k += 1
            total += cum[k]
        return total / len(conf)

    grid = torch.linspace(0, 1.01, 2021, dtype=torch.float64)
    grid_costs = torch.tensor([brute(t) for t in grid.tolist()], dtype=torch.float64)
    assert (grid_costs.diff() >= 0).all()  # a higher threshold never costs less
    stops = cascade_stops(conf, grid)
    assert torch.tensor(cum, dtype=torch.float64)[stops].mean(-1).tolist() == pytest.approx(grid_costs.tolist())
    for target in [1.0, 1.3, 2.2, 3.9, 5.0, 6.3]:
        t = solve_cascade_threshold(conf, level_costs, target)
        assert abs(brute(t) - target) <= (grid_costs - target).abs().min().item() + 1e-9
        assert not (conf[:, :-1] == t).any()  # away from every switching point


@pytest.mark.parametrize('frac', [0.1, 0.4, 0.7])
def test_budget_met_on_calibration_images(model, varied_images, device, frac):
    model.to(device)
    x = varied_images(64, SIZE).to(device)
    backbone = model.cost_table((3, SIZE, SIZE)).backbone
    lo, hi = backbone[2], sum(backbone)
    target = lo + frac * (hi - lo)
    result = timm_drnet.set_cascade_budget(model, target, x)
    with torch.no_grad():
        out = model.forward_routed(x)
    cost = out.cost.mean().item()
    assert abs(cost - target) <= 0.03 * target
    assert cost == pytest.approx(result.cost, rel=1e-5)
    assert model.cascade.threshold == result.threshold and result.levels == (2, 1, 0)
    assert list(result.counts) == torch.bincount(out.resolution_index.cpu(), minlength=3).tolist()
    assert result.reachable == pytest.approx((lo, hi))


def test_budget_from_batches_with_targets(model, varied_images):
    """A DataLoader-style iterable of (images, targets) calibrates the same as the stacked tensor."""
    x = varied_images(48, SIZE)
    backbone = model.cost_table((3, SIZE, SIZE)).backbone
    target = backbone[2] + 0.5 * backbone[1]
    whole = timm_drnet.set_cascade_budget(model, target, x)
    batched = timm_drnet.set_cascade_budget(model, target,
                                            [(b, torch.zeros(len(b), dtype=torch.long)) for b in x.split(20)])
    assert whole.threshold == pytest.approx(batched.threshold) and whole.cost == pytest.approx(batched.cost)


@pytest.mark.parametrize('kwargs, match', [
    (dict(threshold=0.5, levels=(0, 3)), r'levels \[3\] out of range'),
    (dict(threshold=0.5, levels=(1, 1)), 'must not repeat'),
    (dict(threshold=0.5, levels=()), 'at least one level'),
    (dict(threshold=-0.1), 'finite number >= 0'),
    (dict(threshold=float('nan')), 'finite number >= 0'),
])
def test_bad_settings(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model.set_cascade(**kwargs)
    assert model.cascade is None


def test_unreachable_budget_leaves_model_unchanged(model, varied_images):
    x = varied_images(16, SIZE)
    backbone = model.cost_table((3, SIZE, SIZE)).backbone
    with pytest.raises(ValueError, match='out of reach for a cascade over candidates'):
        timm_drnet.set_cascade_budget(model, 0.5 * backbone[2], x)
    with pytest.raises(ValueError, match='out of reach'):
        timm_drnet.set_cascade_budget(model, backbone[0] + backbone[2] + 1e-3, x, levels=(2, 0))
    with pytest.raises(ValueError, match='at least one calibration image'):
        timm_drnet.set_cascade_budget(model, backbone[1], x[:0])
    assert model.cascade is None

""" Compute budgets at inference, without retraining

The paper trains one DRNet per FLOPs target. A trained predictor already ranks images by how much they
gain from a large resolution, so a budget can instead be met by shifting its scores s_ij with a
Lagrangian cost penalty, b_j = -lambda * C_j: every image then picks

    argmax_j (s_ij - lambda * C_j)

The cost each image picks never rises as lambda grows (for two lambdas, adding the two optimality
conditions gives (lambda_2 - lambda_1) (C_j - C_k) >= 0), so the average cost is a step function that
falls monotonically with lambda. Images move to cheaper resolutions in the order of how strongly the
predictor prefers the expensive ones (with two candidates: in the order of s_i0 - s_i1): the ordering
by difficulty is kept, only the thresholds move.

Calibration on a handful of unlabeled images enumerates the exact lambdas at which some image changes
resolution, binary-searches that sorted list for the plateau whose average cost is closest to the
target and takes a lambda in the middle of that plateau, away from any image's switching point.

The scores are only as good as the predictor's training made them: one whose scores for a middle resolution
never top the others sends no image there at any lambda, and the budget curve then runs straight between
the extreme resolutions, below the static models in between. Labeled calibration images fix that without
retraining: ``solve_budget_top1`` adds per-resolution offsets d_j (one coordinate at a time, lambda solved
again for each) and keeps those that score best on the calibration images while meeting the budget. The
routing is still argmax_j (s_ij + d_j - lambda * C_j), so images keep the predictor's order between any two
resolutions; with an uninformative predictor the search falls back to mixing the static resolutions that
give the most top-1 per cost.
"""
from typing import Callable, NamedTuple, Optional, Tuple

import torch

from .calibration import Images, calibration_outputs, closest_step
from .costs import CostTable, eval_mode
from .drnet import DRNet

__all__ = ['BudgetCalibration', 'set_budget', 'cost_offsets', 'solve_budget', 'solve_budget_top1']


class BudgetCalibration(NamedTuple):
    """What ``set_budget`` installed and what it achieved on the calibration images."""
    target: float  # requested mean cost per image, predictor included, in ``unit``
    cost: float  # mean cost per image reached on the calibration images, predictor included
    lam: float  # Lagrange multiplier: price of one cost unit in predictor-logit units
    bias: torch.Tensor  # (m,) offsets installed in ``resolution_bias``
    counts: Tuple[int, ...]  # calibration images routed to each resolution
    reachable: Tuple[float, float]  # (every image at the cheapest, every image at the dearest) mean cost
    unit: str
    top1: Optional[float] = None  # top-1 % on the calibration images (labeled calibration only)


def cost_offsets(costs: torch.Tensor, lam: float) -> torch.Tensor:
    """Logit offsets b_j = -lambda * (C_j - min C); the constant shift leaves every argmax unchanged."""
    return -lam * (costs - costs.min())


def _routed_cost(scores: torch.Tensor, costs: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Mean cost of argmax routing of ``scores`` (N, m) for each lambda in ``lam`` (L,), returns (L,)."""
    shifted = scores.unsqueeze(0) - lam.view(-1, 1, 1) * costs.view(1, 1, -1)
    return costs[shifted.argmax(-1)].mean(-1)


def _plateau_lambdas(scores: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
    """One lambda inside every interval on which the routing of ``scores`` is constant, ascending.

    Image i is indifferent between j and k at lambda = (s_ij - s_ik) / (C_j - C_k); between consecutive
    such points no image changes resolution.
    """
    j, k = torch.triu_indices(costs.numel(), costs.numel(), offset=1)
    keep = costs[j] != costs[k]
    j, k = j[keep], k[keep]
    points = ((scores[:, j] - scores[:, k]) / (costs[j] - costs[k])).flatten().unique()  # sorted
    if points.numel() == 0:
        return torch.zeros(1, dtype=scores.dtype)
    margin = points.abs().max().clamp_min(1.)
    return torch.cat([points[:1] - margin, (points[1:] + points[:-1]) / 2, points[-1:] + margin])


def solve_budget(scores: torch.Tensor, costs: torch.Tensor, target: float) -> float:
    """ Lambda whose routing of ``scores`` (N, m) averages closest to ``target`` backbone cost.

    ``costs`` are the m backbone costs C_j, ``target`` lies within [min C, max C]. Ties go to the cheaper
    plateau. Float64 maths throughout.
    """
    scores, costs = scores.double(), costs.double()
    return closest_step(_plateau_lambdas(scores, costs), lambda lam: _routed_cost(scores, costs, lam), target)


def _route(scores: torch.Tensor, costs: torch.Tensor, offsets: torch.Tensor, target: float
           ) -> Tuple[torch.Tensor, float]:
    """Resolution index of each image once lambda meets ``target`` for ``scores + offsets``, and that lambda."""
    lam = solve_budget(scores + offsets, costs, target)
    return (scores + offsets + cost_offsets(costs, lam)).argmax(-1), lam


def solve_budget_top1(
        scores: torch.Tensor,
        costs: torch.Tensor,
        target: float,
        correct: torch.Tensor,
        tolerance: float = 0.03,
        num_candidates: int = 33,
        passes: int = 2,
) -> Tuple[torch.Tensor, float]:
    """ Offsets d (m,) and lambda whose routing of ``scores`` (N, m) is most often right on labeled images.

    ``correct`` (N, m) says whether the backbone classifies image i correctly at resolution j. Starting from
    the plain Lagrangian (d = 0), each d_j (j >= 1; d_0 = 0 fixes the free constant) in turn tries the
    offsets at which a quantile of the images would switch to resolution j, and one far below and one far
    above every image's gap (before the cost penalty: j first for no image / for every image); lambda is
    solved again for each, and the candidate is kept when its mean backbone cost is within
    ``tolerance`` of ``target`` and it classifies more calibration images correctly (ties keep the incumbent).
    """
    scores, costs, correct = scores.double(), costs.double(), correct.bool()
    m = costs.numel()
    if correct.shape != scores.shape:
        raise ValueError(f'correct has shape {tuple(correct.shape)}, expected the scores\' {tuple(scores.shape)}')

    def score(offsets: torch.Tensor) -> Tuple[int, float]:
        index, lam = _route(scores, costs, offsets, target)
        if abs(costs[index].mean().item() - target) > tolerance * target:
            return -1, lam
        return int(correct.gather(1, index[:, None]).sum()), lam

    best = torch.zeros(m, dtype=torch.float64)
    best_hits, best_lam = score(best)
    levels = torch.linspace(0, 1, num_candidates, dtype=torch.float64)
    candidates = {}
    for j in range(1, m):
        # gap_i: what image i needs added to s_ij to beat its best other resolution
        gap = torch.cat([scores[:, :j], scores[:, j + 1:]], 1).max(1).values - scores[:, j]
        span = 2 * gap.abs().max().item() + 1
        candidates[j] = torch.cat([gap.quantile(levels), gap.new_tensor([-span, span])]).tolist()
    for _ in range(passes):
        for j, values in candidates.items():
            for value in values:
                trial = best.clone()
                trial[j] = value
                hits, lam = score(trial)
                if hits > best_hits:
                    best, best_hits, best_lam = trial, hits, lam
    return best, best_lam


def _scores_and_correct(model: DRNet, labeled: bool
                        ) -> Callable[[torch.Tensor, Optional[torch.Tensor]], Tuple[torch.Tensor, ...]]:
    """Per chunk: raw predictor scores (B, m) without resolution bias; with ``labeled``, also whether the backbone
    classifies each image correctly at each resolution (B, m)."""
    def fn(chunk: torch.Tensor, target: Optional[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        scores = model.predict_logits(chunk, bias=False).float()
        if not labeled:
            return scores,
        return scores, torch.stack([model.forward_resolution(chunk, j).argmax(-1).cpu() == target
                                    for j in range(model.num_resolutions)], 1)
    return fn


def set_budget(
        model: DRNet,
        target: float,
        images: Images,
        batch_size: int = 64,
        tolerance: float = 0.03,
        labeled: bool = False,
) -> BudgetCalibration:
    """ Meet a mean cost per image at inference, without retraining.

    Calibrates ``model.resolution_bias`` on a few unlabeled ``images`` (a tensor (N, C, H, W), or an iterable
    of batches or (images, targets) pairs such as a DataLoader) so the mean cost per image on them,
    predictor included, in the model's cost unit (GMACs, or ms after ``set_cost_table``), is ``target``
    within ``tolerance``. The offsets are a Lagrangian cost penalty, so images keep the predictor's
    order of difficulty. The bias is a buffer, saved with the state dict; ``resolution_bias.zero_()``
    restores the trained routing.

    ``labeled=True`` takes (images, targets) batches and also chooses per-resolution offsets that classify
    the most calibration images correctly within the budget (``solve_budget_top1``), which runs the
    backbone at every resolution on them; use it when the predictor leaves a resolution unused.

    Raises ValueError, leaving the model unchanged, for an unreachable target, when the calibration set is
    too small to get within ``tolerance``, or for a model whose predictor was never trained.
    """
    if not model.predictor_trained:
        raise ValueError('set_budget shifts the routing of a trained predictor, but this model\'s predictor was '
                         'never trained (it routes every image at full resolution); train it (stage 2), or meet '
                         'the budget with a confidence cascade: set_cascade_budget(model, target, images)')
    if model.eval_gumbel:
        raise ValueError('set_budget calibrates deterministic argmax routing, but this model samples Gumbel '
                         'noise in eval (eval_gumbel=True); set model.eval_gumbel = False first')
    if not tolerance >= 0:
        raise ValueError(f'tolerance must be >= 0 (a fraction of the target), got {tolerance}')
    target = float(target)
    outputs, input_size = calibration_outputs(model, images, batch_size, _scores_and_correct(model, labeled), labeled)
    scores, correct = outputs if labeled else (outputs[0], None)
    table: CostTable = model.cost_table(input_size)
    costs = torch.tensor(table.backbone, dtype=torch.float64)
    reachable = (costs.min().item() + table.predictor, costs.max().item() + table.predictor)
    if not reachable[0] <= target <= reachable[1]:
        raise ValueError(
            f'Budget of {target:.4g} {table.unit} per image is out of reach for inputs of {input_size}: the model '
            f'costs from {reachable[0]:.4g} (every image at the cheapest resolution) to {reachable[1]:.4g} '
            f'{table.unit} (every image at the dearest), predictor included')

    if correct is None:
        lam = solve_budget(scores, costs, target - table.predictor)
        bias = cost_offsets(costs, lam).float()
    else:
        offsets, lam = solve_budget_top1(scores, costs, target - table.predictor, correct,
                                         tolerance=tolerance * target / (target - table.predictor))
        bias = (offsets + cost_offsets(costs, lam)).float()
    # the routing the model will do: its own float32 sum and selection, not the float64 search
    with eval_mode(model):
        index = model.select(scores.to(bias.device) + bias).argmax(-1)
    cost = costs[index].mean().item() + table.predictor
    if abs(cost - target) > tolerance * target:
        step = (reachable[1] - reachable[0]) / scores.shape[0]
        raise ValueError(
            f'The closest mean cost reachable on {scores.shape[0]} calibration images is {cost:.4g} {table.unit}, '
            f'{abs(cost - target) / target:.1%} from the target {target:.4g} (tolerance {tolerance:.1%}); each image '
            f'moves the mean by up to {step:.3g} {table.unit}, so calibrate on more images')
    with torch.no_grad():
        model.resolution_bias.copy_(bias.to(model.resolution_bias))
    counts = tuple(torch.bincount(index, minlength=costs.numel()).tolist())
    top1 = None if correct is None else 100 * correct.gather(1, index.cpu()[:, None]).float().mean().item()
    return BudgetCalibration(target, cost, lam, bias, counts, reachable, table.unit, top1)

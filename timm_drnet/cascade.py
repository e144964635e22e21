""" Confidence cascade: a compute budget set by the backbone's own confidence

DRNet's predictor decides from a small thumbnail before the backbone runs. Where that thumbnail says little
about which images are hard (``benchmarks/predictor_ceiling.py`` measures this on imagenette), its routing is no
better than random. A cascade asks the backbone instead, and needs no trained predictor (a stage-1 model works):
every image first runs at the cheapest level; it stops there when its top softmax probability reaches
``threshold``, else it runs again at the next level, and so on; the last level answers for every image still
going. An image's cost is the sum of the levels it ran; the predictor does not run.

A higher threshold sends every image at least as far, so the mean cost rises monotonically with it: one number
is the whole budget knob, and calibrating it needs no labels. ``set_cascade_budget`` runs every level on the
calibration images once, then binary-searches the confidences at which images switch for the threshold whose
mean cost is closest to the target, and takes it half-way between two such confidences.
"""
from typing import NamedTuple, Optional, Sequence, Tuple

import torch

from .calibration import Images, calibration_outputs, closest_step
from .costs import CostTable
from .drnet import DRNet
from .routing import check_levels, top_probability

__all__ = ['CascadeCalibration', 'set_cascade_budget', 'cascade_stops', 'solve_cascade_threshold']


class CascadeCalibration(NamedTuple):
    """What ``set_cascade_budget`` installed and what it achieved on the calibration images."""
    target: float  # requested mean cost per image, in ``unit``
    cost: float  # mean cost per image reached on the calibration images (sum of the levels each ran)
    threshold: float
    levels: Tuple[int, ...]
    counts: Tuple[int, ...]  # calibration images answered at each candidate (length m, 0 for unused candidates)
    reachable: Tuple[float, float]  # (every image stops at the first level, every image runs every level)
    unit: str


def cascade_stops(confidence: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """ (T, N) position of the level at which each image stops, for each threshold in ``threshold`` (T,).

    ``confidence`` (N, L) is each image's top class probability at each level, in running order.
    """
    go_on = confidence[None, :, :-1] < threshold.view(-1, 1, 1)  # (T, N, L - 1)
    return go_on.long().cumprod(-1).sum(-1)  # levels passed before the first stop


def _mean_cost(confidence: torch.Tensor, level_costs: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """(T,) mean cost per image: each image pays every level up to the one it stops at."""
    return level_costs.cumsum(0)[cascade_stops(confidence, threshold)].mean(-1)


def solve_cascade_threshold(confidence: torch.Tensor, level_costs: torch.Tensor, target: float) -> float:
    """ The threshold whose mean cost on ``confidence`` (N, L) is closest to ``target`` (ties: the cheaper).

    ``level_costs`` (L,) are the levels' costs in running order. The mean cost only changes at the
    confidences themselves and rises with the threshold, so the answer is taken half-way between two
    consecutive ones (or below the smallest / above the largest), away from every image's switching point.
    """
    confidence, level_costs = confidence.double(), level_costs.double()
    points = confidence[:, :-1].flatten().unique()  # sorted
    if points.numel() == 0:  # one level: nothing to decide
        return 0.
    thresholds = torch.cat([points[:1] / 2, (points[1:] + points[:-1]) / 2, points[-1:] + 1])
    return closest_step(thresholds, lambda t: _mean_cost(confidence, level_costs, t), target)


def set_cascade_budget(
        model: DRNet,
        target: float,
        images: Images,
        levels: Optional[Sequence[int]] = None,
        batch_size: int = 64,
        tolerance: float = 0.03,
) -> CascadeCalibration:
    """ Meet a mean cost per image at inference with a confidence cascade, without a trained predictor.

    Runs every level on a few unlabeled ``images`` (as for ``set_budget``) and installs, with
    ``model.set_cascade``, the threshold whose mean cost on them is ``target`` within ``tolerance``. Raises
    ValueError, leaving the model unchanged, for a target outside [cost of the first level, cost of all levels]
    or when the calibration set is too small to get within ``tolerance``.
    """
    levels = check_levels(levels, model.num_resolutions)
    if not tolerance >= 0:
        raise ValueError(f'tolerance must be >= 0 (a fraction of the target), got {tolerance}')
    target = float(target)

    def level_confidence(chunk: torch.Tensor, _) -> Tuple[torch.Tensor]:
        """(B, L) top class probability of each image at each level."""
        return torch.stack([top_probability(model.forward_resolution(chunk, j)) for j in levels], 1),

    (confidence,), input_size = calibration_outputs(model, images, batch_size, level_confidence,
                                                     caller='set_cascade_budget')
    table: CostTable = model.cost_table(input_size)
    level_costs = torch.tensor([table.backbone[j] for j in levels], dtype=torch.float64)
    reachable = (level_costs[0].item(), level_costs.sum().item())
    if not reachable[0] <= target <= reachable[1]:
        raise ValueError(
            f'Budget of {target:.4g} {table.unit} per image is out of reach for a cascade over candidates '
            f'{list(levels)} at inputs of {input_size}: it costs from {reachable[0]:.4g} (every image stops at '
            f'the first level) to {reachable[1]:.4g} {table.unit} (every image runs every level)')
    threshold = solve_cascade_threshold(confidence, level_costs, target)
    stops = cascade_stops(confidence, torch.tensor([threshold]))[0]
    cost = level_costs.cumsum(0)[stops].mean().item()
    if abs(cost - target) > tolerance * target:
        raise ValueError(
            f'The closest mean cost reachable on {confidence.shape[0]} calibration images is {cost:.4g} '
            f'{table.unit}, {abs(cost - target) / target:.1%} from the target {target:.4g} (tolerance '
            f'{tolerance:.1%}); calibrate on more images')
    model.set_cascade(threshold, levels)
    answered = torch.tensor(levels)[stops]
    counts = tuple(torch.bincount(answered, minlength=model.num_resolutions).tolist())
    return CascadeCalibration(target, cost, threshold, levels, counts, reachable, table.unit)

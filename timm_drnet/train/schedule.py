""" Stage-2 schedules: the Gumbel temperature over the stage, and the FLOPs target alpha """
import logging
import math
from dataclasses import dataclass
from typing import Optional, Sequence

from ..errors import setting_error

__all__ = ['GumbelSchedule', 'gumbel_tau', 'resolve_flops_target']

_logger = logging.getLogger(__name__)

TAU_DECAYS = ('exp', 'linear', 'cosine')


def gumbel_tau(progress: float, start: float, end: Optional[float], decay: str) -> float:
    """Temperature after ``progress`` (0..1) of the stage: ``start`` decayed to ``end`` (constant if None)."""
    if end is None:
        return start
    progress = min(max(progress, 0.), 1.)
    if decay == 'linear':
        return start + (end - start) * progress
    if decay == 'cosine':
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
    return start * (end / start) ** progress


@dataclass(frozen=True)
class GumbelSchedule:
    """The Gumbel-softmax temperature of stage 2: ``tau`` at the start, decayed per update to ``tau_end`` if set."""
    tau: float = 3.0
    tau_end: Optional[float] = None
    decay: str = 'exp'

    def __post_init__(self):
        if self.decay not in TAU_DECAYS:
            raise setting_error(ValueError, f'{{decay}} must be one of {TAU_DECAYS}, got {self.decay!r}')
        if self.tau <= 0 or (self.tau_end is not None and self.tau_end <= 0):
            raise setting_error(ValueError, f'Gumbel temperatures must be > 0, got {{tau}} {self.tau:g}, '
                                            f'{{tau_end}} {self.tau_end}')

    def at(self, progress: float) -> float:
        return gumbel_tau(progress, self.tau, self.tau_end, self.decay)


def resolve_flops_target(flops_target: Optional[float], costs: Sequence[float], unit: str, two_sided: bool) -> float:
    """ alpha for the FLOPs loss: the given target, checked to be reachable, or the candidates' mean cost."""
    low, high = min(costs), max(costs)
    if flops_target is None:
        return sum(costs) / len(costs)
    if flops_target < low:
        raise setting_error(
            ValueError,
            f'{{flops_target}} {flops_target:g} {unit} is below the smallest reachable average: the backbone '
            f'costs {low:.4g} {unit} per image even at the smallest resolution. Choose a target between '
            f'{low:.4g} and {high:.4g} {unit} (candidate costs: {", ".join(f"{c:.4g}" for c in costs)}).')
    if flops_target >= high:
        effect = 'pulls every image to the largest resolution' if two_sided else \
            'is never active and routing learns accuracy only'
        _logger.warning(f'The FLOPs target {flops_target:g} {unit} is at or above the largest resolution\'s '
                        f'{high:.4g} {unit}: the FLOPs loss {effect}.')
    return flops_target

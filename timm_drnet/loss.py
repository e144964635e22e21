""" DRNet losses

``FlopsLoss`` is the paper's regulariser (eq. 6-7):

    F_i = sum_j C_j h_ij,   L_reg = max(0, (E[F] - alpha) / (C_max - C_min))

with h the straight-through hard Gumbel-softmax selection, so the predictor receives a gradient through
the soft relaxation. ``DRNetLoss`` adds it to the classification loss: L = L_ce + eta * L_reg (eq. 8).
C_j is the backbone's cost at resolution j (the predictor's fixed cost is outside the regulariser, as
in the paper), so ``alpha`` is a target for the backbone's average cost in the cost table's unit.

``two_sided=True`` (not in the paper) penalises |E[F] - alpha| instead, holding the average at alpha rather
than only capping it: with the cap alone, a classification loss that favours some resolution regardless
of the image (the straight-through gradient rewards less confident branches) can drive every image there.

``MultiResolutionLoss`` is stage 1: the sum over candidates of the classification loss at each (the paper),
plus, beyond the paper, cross-resolution distillation (``distill``), each term weight x T^2 x
KL(teacher || student) at temperature T, the teacher detached:

* ``inplace`` (US-Nets): every smaller resolution learns the full-resolution branch's soft predictions;
* ``ensemble`` (RS-Nets): every resolution learns a learned ensemble of all resolutions' logits
  (sum_j softmax(w)_j z_j, whose weights w learn by its own cross-entropy on detached logits), and each
  resolution also learns from every higher one (top-down);
* ``teacher``: every resolution learns an external teacher's logits on the same images (e.g. a static model).

Stage 1 computes every resolution per batch anyway, so ``inplace`` and ``ensemble`` cost no extra forward.
"""
from functools import partial
from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ['DISTILL_MODES', 'FlopsLoss', 'DRNetLoss', 'DRNetLossParts', 'MultiResolutionLoss',
           'MultiResolutionLossParts', 'distill_kl']

DISTILL_MODES = ('none', 'inplace', 'ensemble', 'teacher')


class FlopsLoss(nn.Module):
    """ eta * max(0, (mean_i sum_j C_j h_ij - alpha) / (C_max - C_min)); with ``two_sided`` eta * |...|."""

    def __init__(self, alpha: float, eta: float = 1.0, two_sided: bool = False):
        super().__init__()
        if eta < 0:
            raise ValueError(f'FLOPs loss weight eta must be >= 0, got {eta}')
        self.alpha = float(alpha)
        self.eta = float(eta)
        self.two_sided = two_sided

    def forward(self, hard: torch.Tensor, costs: Union[torch.Tensor, Sequence[float]]) -> torch.Tensor:
        """``hard``: (B, m) selection weights; ``costs``: the m backbone costs C_j."""
        costs = torch.as_tensor(costs, dtype=hard.dtype, device=hard.device)
        if hard.ndim != 2 or hard.shape[1] != costs.numel():
            raise ValueError(f'hard selection of shape {tuple(hard.shape)} does not match {costs.numel()} costs')
        span = costs.max() - costs.min()
        if span <= 0:
            raise ValueError('FlopsLoss needs candidate resolutions with different costs (C_max > C_min).')
        gap = ((hard @ costs).mean() - self.alpha) / span
        return self.eta * (gap.abs() if self.two_sided else F.relu(gap))


class DRNetLossParts(NamedTuple):
    total: torch.Tensor
    ce: torch.Tensor
    flops: torch.Tensor


class DRNetLoss(nn.Module):
    """ Classification loss (cross-entropy unless another timm loss is given) plus the FLOPs regulariser."""

    def __init__(self, alpha: float, eta: float = 1.0, base_loss: Optional[nn.Module] = None,
                 two_sided: bool = False):
        super().__init__()
        self.base_loss = base_loss if base_loss is not None else nn.CrossEntropyLoss()
        self.flops_loss = FlopsLoss(alpha, eta, two_sided)

    def forward(
            self,
            logits: torch.Tensor,
            target: torch.Tensor,
            hard: torch.Tensor,
            costs: Union[torch.Tensor, Sequence[float]],
    ) -> DRNetLossParts:
        ce = self.base_loss(logits, target)
        flops = self.flops_loss(hard, costs)
        return DRNetLossParts(ce + flops, ce, flops)


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """ T^2 x KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch; the teacher detached.

    The T^2 factor keeps the gradient's scale independent of T (Hinton et al.).
    """
    t = temperature
    log_p = F.log_softmax(student.float() / t, -1)
    log_q = F.log_softmax(teacher.detach().float() / t, -1)
    return t * t * F.kl_div(log_p, log_q, reduction='batchmean', log_target=True)


class MultiResolutionLossParts(NamedTuple):
    total: torch.Tensor
    ce: torch.Tensor  # (m,) the classification loss at each candidate resolution
    distill: torch.Tensor  # the distillation terms, weighted (0 without distillation)


class MultiResolutionLoss(nn.Module):
    """ Stage 1: the sum over candidate resolutions of the classification loss at each, plus distillation.

    Args:
        num_resolutions: candidates m.
        base_loss: classification loss (cross-entropy unless another is given).
        distill: 'none' (the paper), 'inplace', 'ensemble' or 'teacher' (see the module docstring).
        weight: weight of each distillation term.
        temperature: softmax temperature of the distillation terms.
    """

    def __init__(self, num_resolutions: int, base_loss: Optional[nn.Module] = None, distill: str = 'none',
                 weight: float = 1.0, temperature: float = 1.0):
        super().__init__()
        if distill not in DISTILL_MODES:
            raise ValueError(f"Unknown distill '{distill}', choose one of {DISTILL_MODES}")
        if weight < 0 or temperature <= 0:
            raise ValueError(f'Distillation needs weight >= 0 and temperature > 0, got {weight} and {temperature}')
        self.base_loss = base_loss if base_loss is not None else nn.CrossEntropyLoss()
        self.distill, self.weight, self.temperature = distill, float(weight), float(temperature)
        # learned ensemble weights (softmax-normalised) of the RS-Nets teacher, uniform at the start
        self.ensemble_weights = nn.Parameter(torch.zeros(num_resolutions)) if distill == 'ensemble' else None

    def ensemble(self, logits: Sequence[torch.Tensor]) -> torch.Tensor:
        """sum_j softmax(w)_j z_j of the detached logits: the ensemble teacher of ``distill='ensemble'``."""
        w = self.ensemble_weights.softmax(0)
        return sum(w[j] * z.detach().float() for j, z in enumerate(logits))

    def forward(self, logits: Sequence[torch.Tensor], target: torch.Tensor,
                teacher: Optional[torch.Tensor] = None) -> MultiResolutionLossParts:
        """``logits``: one (B, num_classes) tensor per candidate, largest first; ``teacher``: the external teacher's
        logits of the same images (``distill='teacher'`` only)."""
        ce = torch.stack([self.base_loss(z, target) for z in logits])
        total = ce.sum()
        kl = partial(distill_kl, temperature=self.temperature)
        terms = []
        if self.distill == 'inplace':
            terms = [kl(z, logits[0]) for z in logits[1:]]
        elif self.distill == 'ensemble':
            ens = self.ensemble(logits)
            total = total + self.base_loss(ens, target)  # trains the ensemble weights only (detached logits)
            terms = [kl(z, ens) for z in logits] + [kl(logits[i], logits[k]) for i in range(len(logits))
                                                     for k in range(i)]
        elif self.distill == 'teacher':
            if teacher is None:
                raise ValueError("distill='teacher' needs the teacher's logits of the batch")
            terms = [kl(z, teacher) for z in logits]
        distill = self.weight * torch.stack(terms).sum() if terms else ce.new_zeros(())
        return MultiResolutionLossParts(total + distill, ce, distill)

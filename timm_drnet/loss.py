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
"""
from typing import NamedTuple, Optional, Sequence, Union

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ['FlopsLoss', 'DRNetLoss', 'DRNetLossParts', 'MultiResolutionLoss', 'MultiResolutionLossParts']


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


class MultiResolutionLossParts(NamedTuple):
    total: torch.Tensor
    ce: torch.Tensor  # (m,) the classification loss at each candidate resolution


class MultiResolutionLoss(nn.Module):
    """ Stage 1 (the paper): the sum over candidate resolutions of the classification loss at each. """

    def __init__(self, base_loss: Optional[nn.Module] = None):
        super().__init__()
        self.base_loss = base_loss if base_loss is not None else nn.CrossEntropyLoss()

    def forward(self, logits: Sequence[torch.Tensor], target: torch.Tensor) -> MultiResolutionLossParts:
        """``logits``: one (B, num_classes) tensor per candidate, largest first."""
        ce = torch.stack([self.base_loss(z, target) for z in logits])
        return MultiResolutionLossParts(ce.sum(), ce)

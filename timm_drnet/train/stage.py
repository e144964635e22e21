""" The two training stages

* ``multires`` (stage 1): every batch at all m candidate resolutions, each through its own private BN branch;
  the predictor is frozen and unused.
* ``drnet`` (stage 2): each image at the resolution the predictor picks (Gumbel-softmax, straight through).

``StageForward`` is a stage's training forward as the single module call DDP wraps.
"""
from typing import Any

import torch
from torch import nn

__all__ = ['STAGES', 'StageForward']

STAGES = ('multires', 'drnet')


class StageForward(nn.Module):
    """ The model's training forward for one stage.

    ``multires``: the whole batch at every candidate resolution, one logits tensor each. ``drnet``: the
    routed forward with its routing record (``DRNetOutput``).
    """

    def __init__(self, model: nn.Module, stage: str):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f'Unknown stage {stage!r}, choose one of {STAGES}')
        self.model = model
        self.stage = stage

    def forward(self, x: torch.Tensor) -> Any:
        if self.stage == 'multires':
            return tuple(self.model(x, resolution_index=j) for j in range(self.model.num_resolutions))
        return self.model.forward_routed(x)

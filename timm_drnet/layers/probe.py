""" A probe forward: one no-grad call that hooks watch, for code that reads a model's structure off its calls """
from typing import Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ['probe_forward']


def probe_forward(module: nn.Module, example: torch.Tensor, handles: Iterable[RemovableHandle]) -> None:
    """Run ``module`` on ``example`` without gradient, then remove the hooks ``handles`` (also when it raises)."""
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in handles:
            h.remove()

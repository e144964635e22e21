""" Batch-norm statistics under routed training

Two situations in which a training-mode batch norm would compute the wrong thing, or nothing:

* Routed training can send a single image to a resolution. A batch norm whose input then holds one value per
  channel (the 1x1 last map of one image, or the pooled head of MobileNetV4) has no batch statistics and torch
  raises. ``guard_single_value_norms`` makes such a call normalise with the running statistics, as in eval,
  without updating them; the affine weights still get their gradient.
* Gradient checkpointing runs a forward again during backward. ``running_stats_frozen`` lets that recompute
  use the batch statistics it must reproduce without folding the same batch into the running statistics twice.
"""
import contextlib
from typing import Any, Callable, Iterator, List

import torch
import torch.utils.checkpoint
from torch import nn

from .resolution_norm import is_single_value, resolution_norms

__all__ = ['checkpoint_with_batch_stats', 'guard_single_value_norms', 'running_stats_frozen']


def _batch_norms(module: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _single_value_pre_hook(norm: nn.Module, args) -> None:
    if norm.__dict__.pop('_drnet_single_value', False):  # a call that raised before its post-hook ran
        norm.training = True
    if norm.training and is_single_value(args[0]):  # no batch statistics: the running ones, left alone
        norm.training = False
        norm._drnet_single_value = True


def _single_value_post_hook(norm: nn.Module, args, output) -> None:
    if norm.__dict__.pop('_drnet_single_value', False):
        norm.training = True


def guard_single_value_norms(module: nn.Module) -> nn.Module:
    """ Let every batch norm under ``module`` take an input with one value per channel in training mode: such a call
    uses the running statistics (not updated by it); any other call is unchanged. The private branches of
    ``ResolutionBatchNorm`` do this in the wrapper's forward already; the other norms (a predictor's, shared ones)
    get a pair of forward hooks. Returns ``module``.
    """
    branches = {id(b) for norm in resolution_norms(module) for b in norm.branches}
    for norm in _batch_norms(module):
        if id(norm) not in branches:
            norm.register_forward_pre_hook(_single_value_pre_hook)
            norm.register_forward_hook(_single_value_post_hook)
    return module


@contextlib.contextmanager
def running_stats_frozen(module: nn.Module) -> Iterator[None]:
    """ Training-mode batch norms under ``module`` normalise with batch statistics as always, but leave the running
    statistics and ``num_batches_tracked`` as they were for the duration.

    The update is made a no-op (momentum 0) rather than switched off, so that each norm runs the same kernel and
    saves the same tensors for backward as in the first forward (gradient checkpointing compares them).
    """
    norms = [m for m in _batch_norms(module) if m.track_running_stats and m.num_batches_tracked is not None]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def checkpoint_with_batch_stats(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, module: nn.Module) -> Any:
    """ ``fn(x)`` under non-reentrant gradient checkpointing, its recompute in backward normalising with the same
    batch statistics without updating ``module``'s running statistics a second time.

    ``fn`` must set every state its result depends on itself (DRNet: the active branch), since the recompute runs
    after other calls may have changed it.
    """
    calls = []

    def segment(images: torch.Tensor) -> Any:
        recompute = bool(calls)
        calls.append(True)
        with running_stats_frozen(module) if recompute else contextlib.nullcontext():
            return fn(images)
    return torch.utils.checkpoint.checkpoint(segment, x, use_reentrant=False)

""" Resolution-private batch normalisation

DRNet (Zhu et al., NeurIPS 2021, eq. 3) gives every batch norm of the backbone ``m`` private copies,
one per candidate input resolution, because activation statistics differ between resolutions while
the convolutions can stay shared. ``convert_resolution_bn`` performs that surgery on any timm model.

The wrapper is a plain ``nn.Module`` holding an ``nn.ModuleList``: it must not subclass ``_BatchNorm``,
or ``timm.layers.convert_sync_batchnorm`` would replace the whole wrapper with a single SyncBatchNorm
instead of converting each private branch.
"""
import copy
from typing import List, Optional, Sequence

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d
from timm.layers import FrozenBatchNormAct2d

__all__ = [
    'ResolutionBatchNorm', 'convert_resolution_bn', 'select_resolution_bn', 'set_active_resolution',
    'resolution_norms', 'is_batch_norm', 'is_layer_norm', 'is_single_value', 'unused_branch_anchor',
    'with_running_stats',
]

# nn.BatchNorm*d, SyncBatchNorm, timm BatchNormAct2d / SyncBatchNormAct all derive from _BatchNorm
_BATCH_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d, FrozenBatchNormAct2d)


def is_batch_norm(module: nn.Module) -> bool:
    """True for every batch norm flavour timm builds (plain, fused act, sync, frozen)."""
    return isinstance(module, _BATCH_NORM_TYPES)


class ResolutionBatchNorm(nn.Module):
    """ ``num_resolutions`` private copies of one batch norm (or layer / group norm); ``active`` picks the copy in use.

    A training input with one value per channel is normalised with the branch's running statistics
    (``with_running_stats``): routed training may send a single image to any resolution.

    Each branch is a deep copy of the original layer, so it keeps the original's kind, statistics,
    affine parameters, eps / momentum and, for ``BatchNormAct2d``, the fused activation and drop.
    """

    def __init__(self, norm: nn.Module, num_resolutions: int):
        super().__init__()
        if num_resolutions < 1:
            raise ValueError(f'num_resolutions must be >= 1, got {num_resolutions}')
        self.branches = nn.ModuleList([copy.deepcopy(norm) for _ in range(num_resolutions)])
        self.active = 0

    @property
    def num_resolutions(self) -> int:
        return len(self.branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.branches[self.active]
        if self.training and is_single_value(x):
            return with_running_stats(branch, x)
        return branch(x)

    def extra_repr(self) -> str:
        return f'active={self.active}'


def is_layer_norm(module: nn.Module) -> bool:
    """True for layer and group norms with an affine to make private (timm's LayerNorm2d, GroupNorm1 included)."""
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) and any(True for _ in module.parameters(recurse=False))


def is_single_value(x: torch.Tensor) -> bool:
    """True when a norm's input holds one value per channel: a batch norm has no batch statistics for it."""
    return bool(x.shape[1]) and x.numel() == x.shape[1]


def with_running_stats(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ ``norm(x)`` normalised with its running statistics (as in eval), which it leaves alone; the affine weights
    still get their gradient. For a training batch norm that sees one value per channel (one routed image whose map
    is 1x1, MobileNetV4's norm on its pooled head), where torch has no batch statistics."""
    norm.training = False
    try:
        return norm(x)
    finally:
        norm.training = True


def convert_resolution_bn(module: nn.Module, num_resolutions: int, layer_norms: bool = False) -> nn.Module:
    """ Replace every batch norm under ``module`` (``module`` itself included) by a ResolutionBatchNorm.

    Shortcut / downsample norms are found like any other. With ``layer_norms`` (beyond the paper) every layer and
    group norm gets private copies too: their statistics are per token / per image anyway, so only the affine
    weights differ between resolutions. Without it, models without batch norm come back unchanged. Returns the
    converted module (a new one if ``module`` was a norm).
    """
    if isinstance(module, ResolutionBatchNorm):
        raise ValueError('Module already holds resolution-private norms; convert a model only once.')
    if is_batch_norm(module) or (layer_norms and is_layer_norm(module)):
        return ResolutionBatchNorm(module, num_resolutions)
    for name, child in module.named_children():
        converted = convert_resolution_bn(child, num_resolutions, layer_norms)
        if converted is not child:
            module.add_module(name, converted)
    return module


def select_resolution_bn(module: nn.Module, index: int) -> nn.Module:
    """ Inverse of ``convert_resolution_bn``: keep branch ``index`` of every private norm as a plain norm.

    The result is an ordinary single-resolution model, e.g. for export of one resolution.
    """
    if isinstance(module, ResolutionBatchNorm):
        return module.branches[index]
    for name, child in module.named_children():
        selected = select_resolution_bn(child, index)
        if selected is not child:
            module.add_module(name, selected)
    return module


def resolution_norms(module: nn.Module) -> List[ResolutionBatchNorm]:
    """All resolution-private norms under ``module``, in module order."""
    return [m for m in module.modules() if isinstance(m, ResolutionBatchNorm)]


def set_active_resolution(module: nn.Module, index: int) -> None:
    """Route every resolution-private norm under ``module`` to branch ``index``."""
    for norm in resolution_norms(module):
        if not 0 <= index < norm.num_resolutions:
            raise IndexError(f'resolution index {index} out of range for {norm.num_resolutions} branches')
        norm.active = index


def unused_branch_anchor(norms: Sequence[ResolutionBatchNorm], counts: Sequence[int]) -> Optional[torch.Tensor]:
    """ 0 x the sum of the parameters of every branch j with ``counts[j] == 0`` (None if every branch ran).

    Added to a routed output, it gives the branches no image chose a (zero) gradient, so DDP runs without
    ``find_unused_parameters``.
    """
    params = [p for norm in norms for j, c in enumerate(counts) if not c for p in norm.branches[j].parameters()]
    return 0. * sum(p.sum() for p in params) if params else None

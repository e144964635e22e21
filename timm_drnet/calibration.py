""" Calibration helpers shared by budgets and cascades

Both ways of meeting a compute budget at inference (``budget``: predictor offsets, ``cascade``: a confidence
threshold) run the model once over a few calibration images, then search a sorted list of candidate settings for
the one whose mean cost per image is closest to the target. ``calibration_outputs`` is that pass and
``closest_step`` that search.
"""
from typing import Callable, Iterable, Iterator, List, Optional, Tuple, Union

import torch
from torch import nn

from .costs import eval_mode

__all__ = ['Images', 'calibration_batches', 'calibration_outputs', 'closest_step']

Images = Union[torch.Tensor, Iterable]  # a tensor (N, C, H, W), or batches / (images, targets) pairs (a DataLoader)


def calibration_batches(images: Images, labeled: bool) -> Iterator[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """(images, targets or None) from a tensor (N, C, H, W) or an iterable of tensors / (images, targets) pairs."""
    if isinstance(images, torch.Tensor):
        images = [images]
    for batch in images:
        target = None
        if isinstance(batch, (tuple, list)) and batch:
            batch, target = batch[0], (batch[1] if len(batch) > 1 else None)
        if not isinstance(batch, torch.Tensor):
            raise TypeError(f'Calibration images must be tensors (N, C, H, W) or (images, targets) batches, '
                            f'got {type(batch).__name__}')
        if labeled:
            if not isinstance(target, torch.Tensor) or target.dtype.is_floating_point or \
                    target.shape != batch.shape[:1]:
                got = f'{type(target).__name__} {tuple(target.shape)} {target.dtype}' \
                    if isinstance(target, torch.Tensor) else type(target).__name__
                raise ValueError(f'Labeled calibration needs (images, targets) batches with one integer class index '
                                 f'per image: images {tuple(batch.shape)}, targets {got}')
        yield batch, target


@torch.no_grad()
def calibration_outputs(
        model: nn.Module,
        images: Images,
        batch_size: int,
        fn: Callable[[torch.Tensor, Optional[torch.Tensor]], Tuple[torch.Tensor, ...]],
        labeled: bool = False,
        caller: str = 'set_budget',
) -> Tuple[Tuple[torch.Tensor, ...], Tuple[int, int, int]]:
    """ ``fn(chunk, targets)`` over the calibration images in eval mode, ``batch_size`` at a time, its outputs
    concatenated (each moved to the CPU), and the images' (C, H, W).

    Checks every batch as the model's forward does, and that there is at least one image and one input size.
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    param = next(model.parameters())
    outputs: List[Tuple[torch.Tensor, ...]] = []
    sizes = set()
    with eval_mode(model):
        for batch, target in calibration_batches(images, labeled):
            model.check_input(batch)
            sizes.add(tuple(batch.shape[1:]))
            for start in range(0, batch.shape[0], batch_size):
                chunk = batch[start:start + batch_size].to(param.device, param.dtype)
                t = None if target is None else target[start:start + batch_size].cpu()
                outputs.append(tuple(o.cpu() for o in fn(chunk, t)))
    if sum(o[0].shape[0] for o in outputs) == 0:
        raise ValueError(f'{caller} needs at least one calibration image, got none')
    if len(sizes) > 1:
        raise ValueError(f'Calibration images must share one input size, got {sorted(sizes)}')
    return tuple(torch.cat(parts) for parts in zip(*outputs)), sizes.pop()


def closest_step(candidates: torch.Tensor, mean_cost: Callable[[torch.Tensor], torch.Tensor], target: float) -> float:
    """ The candidate whose ``mean_cost`` is closest to ``target``, ties to the cheaper one.

    ``candidates`` (K,) are sorted so that ``mean_cost`` ((L,) candidates -> (L,) costs) is monotone along them,
    rising or falling; a binary search for where it crosses the target needs O(log K) evaluations.
    """
    first, last = mean_cost(candidates[[0, -1]]).tolist()
    rising = last >= first
    lo, hi = 0, candidates.numel() - 1
    while lo < hi:  # the first candidate at or past the target
        mid = (lo + hi) // 2
        cost = mean_cost(candidates[mid:mid + 1]).item()
        if (cost >= target) if rising else (cost <= target):
            hi = mid
        else:
            lo = mid + 1
    if lo == 0:
        return candidates[0].item()
    before, at = mean_cost(candidates[lo - 1:lo + 1]).tolist()
    if abs(before - target) != abs(at - target):
        return candidates[lo - 1 if abs(before - target) < abs(at - target) else lo].item()
    return candidates[lo - 1 if before < at else lo].item()

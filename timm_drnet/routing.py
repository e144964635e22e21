""" Routing primitives

The steps between a resolution choice and the backbone, free of any model: checking candidate scales and input
batches, the Gumbel-softmax straight-through selection, the resize to a candidate, splitting a batch into one
group per chosen resolution and scattering the outputs back, and the confidence-cascade step. ``DRNet`` composes
them; budgets, cascades, export and the benchmarks reuse them. This module imports no other part of the package.
"""
import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = [
    'MIN_INPUT_SIZE', 'PREDICTOR_GRADS', 'Cascade', 'candidate_sizes', 'snap', 'check_images', 'check_prepared',
    'check_resolutions',
    'check_cascade', 'check_levels', 'cascade_route', 'gumbel_straight_through', 'resize', 'resample_to',
    'split_run', 'top_probability', 'ImagesAt', 'tree_leaves', 'tree_map', 'FullGrid', 'other_resolution_outputs',
    'hard_weighted',
]

# Smallest side, in pixels, a candidate resolution may have; below it most timm backbones collapse
# their feature maps to nothing before the last stage.
MIN_INPUT_SIZE = 16

# How the predictor's straight-through gradient is formed in training, see DRNet's ``predictor_grad``.
PREDICTOR_GRADS = ('routed', 'all')

Run = Callable[[torch.Tensor, int], Any]  # (images, candidate index) -> a tensor or tuple of tensors, a row per image
ImagesAt = Callable[[int, torch.Tensor], torch.Tensor]  # (candidate j, positions) -> those images made at j's size


def tree_map(fn: Callable, *trees: Any) -> Any:
    """``fn`` over the tensors of ``trees``: tensors, or (nested) tuples / lists of tensors of one structure."""
    if isinstance(trees[0], (tuple, list)):
        return type(trees[0])(tree_map(fn, *parts) for parts in zip(*trees))
    return fn(*trees)


def tree_leaves(tree: Any) -> List[torch.Tensor]:
    """The tensors of a tensor or (nested) tuple / list of tensors."""
    if isinstance(tree, (tuple, list)):
        return [leaf for part in tree for leaf in tree_leaves(part)]
    return [tree]


def check_resolutions(resolutions: Sequence[float]) -> Tuple[float, ...]:
    """Validate candidate scale factors: non-empty, each in (0, 1], strictly decreasing (largest first)."""
    try:
        res = tuple(float(r) for r in resolutions)
    except (TypeError, ValueError) as e:
        raise ValueError(f'resolutions must be a sequence of numbers, got {resolutions!r}') from e
    if not res:
        raise ValueError('resolutions must name at least one candidate scale, e.g. (1.0, 0.75, 0.5)')
    bad = [r for r in res if not 0. < r <= 1.]
    if bad:
        raise ValueError(f'resolutions must lie in (0, 1] (fractions of the input size), got {bad} in {res}')
    if len(set(res)) != len(res):
        raise ValueError(f'resolutions must not repeat a candidate, got {res}')
    if list(res) != sorted(res, reverse=True):
        raise ValueError(f'resolutions must be sorted from largest to smallest, got {res}; '
                         f'use {tuple(sorted(res, reverse=True))}')
    return res


def snap(size: float, multiple: int = 1) -> int:
    """The multiple of ``multiple`` nearest ``size`` (ties to the smaller), at least ``multiple``."""
    return max(multiple, multiple * math.ceil(size / multiple - 0.5)) if multiple > 1 else max(1, round(size))


def candidate_sizes(resolutions: Sequence[float], height: int, width: int, multiple: int = 1) -> List[Tuple[int, int]]:
    """(H, W) of every candidate scale for an input of ``height`` x ``width``, each side snapped to a multiple of
    ``multiple`` (a backbone's patch size or stride, see ``backbone.fit_size_multiple``)."""
    return [(snap(r * height, multiple), snap(r * width, multiple)) for r in resolutions]


def check_images(x: torch.Tensor, in_chans: int, sizes: Callable[[int, int], List[Tuple[int, int]]]) -> None:
    """ Raise a clear error for a batch a model cannot take: type, rank, channels, dtype, NaN / Inf, size.

    ``sizes(H, W)`` gives the candidate sizes for this input, smallest last; each must keep ``MIN_INPUT_SIZE``
    pixels a side.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'DRNet expects a torch.Tensor batch, got {type(x).__name__}')
    if x.ndim != 4:
        raise ValueError(f'DRNet expects a batch of images shaped (B, C, H, W), got shape {tuple(x.shape)}')
    if x.shape[1] != in_chans:
        raise ValueError(f'DRNet was built for {in_chans} input channels, got {x.shape[1]} '
                         f'(input shape {tuple(x.shape)})')
    if not x.is_floating_point():
        raise TypeError(f'DRNet expects a floating point image tensor, got {x.dtype}; convert to float and '
                        f'normalise with the mean / std in model.pretrained_cfg')
    # a finite sum implies every element is finite: one reduction (40x cheaper than isfinite over the
    # batch); only a non-finite sum (NaN / Inf, or overflow) pays for the per-image check
    if not torch.isfinite(x.sum()):
        bad = (~torch.isfinite(x).flatten(1).all(1)).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f'Input batch holds NaN or Inf values in image(s) {bad[:10]}'
                             f'{" ..." if len(bad) > 10 else ""}; a non-finite image would poison the shared '
                             f'BatchNorm statistics, drop or repair it first')
    smallest = sizes(x.shape[2], x.shape[3])[-1]
    if min(smallest) < MIN_INPUT_SIZE:
        raise ValueError(f'Input of {x.shape[2]}x{x.shape[3]} px is too small: the smallest candidate '
                         f'resolution would be {smallest[0]}x{smallest[1]} px, below the {MIN_INPUT_SIZE} px minimum')


def check_prepared(x: torch.Tensor, shape: Sequence[Optional[int]], what: str) -> None:
    """Raise a clear error unless ``x`` is a floating point batch shaped ``shape`` (``None``: any batch size), a
    prepared input named ``what``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'{what} must be a torch.Tensor batch, got {type(x).__name__}')
    if x.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape)):
        expected = ', '.join('B' if s is None else str(s) for s in shape)
        raise ValueError(f'{what} must be shaped ({expected}), got {tuple(x.shape)}')
    if not x.is_floating_point():
        raise TypeError(f'{what} must be normalised floating point images, got {x.dtype}')


def gumbel_straight_through(logits: torch.Tensor, tau: float = 1.0, noise: bool = True) -> torch.Tensor:
    """ Hard one-hot selection with the Gumbel-softmax straight-through gradient.

    Same estimator as ``F.gumbel_softmax(hard=True)``, but written as ``one_hot + (soft - soft.detach())``
    so the forward value is exactly 0 / 1: routed logits then equal the backbone's bit for bit.
    """
    if noise:
        gumbels = -torch.empty_like(logits).exponential_().log()
        logits = logits + gumbels
    soft = (logits / tau).softmax(dim=-1)
    index = soft.argmax(dim=-1)
    hard = F.one_hot(index, logits.shape[-1]).to(soft.dtype)
    if not (torch.is_grad_enabled() and logits.requires_grad):
        return hard  # what the line below gives without a gradient (soft - soft is 0), two ops fewer
    return hard + (soft - soft.detach())


def resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of an image batch (float32 maths: CPU antialias kernels lack half precision)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.float(), size=size, mode='bilinear', align_corners=False, antialias=True).to(x.dtype)


def resample_to(maps: torch.Tensor, size: Tuple[int, int], channels_last: bool = False) -> torch.Tensor:
    """ Bilinear resample of feature maps (B, C, H, W), or (B, H, W, C) with ``channels_last``, onto ``size``.

    Puts the feature maps of an image routed to a smaller resolution on the full-resolution grid, so that a
    batch of mixed resolutions stacks.
    """
    if tuple(maps.shape[1:3] if channels_last else maps.shape[-2:]) == tuple(size):
        return maps
    if channels_last:
        return resample_to(maps.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)
    return F.interpolate(maps.float(), size=size, mode='bilinear', align_corners=False).to(maps.dtype)


def _stack_groups(outs: List[Any], used: List[int]) -> Any:
    """Concatenate the groups' outputs along the batch; a clear error when resolutions give different shapes."""
    first = [tuple(o.shape[1:]) for o in tree_leaves(outs[0])]
    for j, out in zip(used[1:], outs[1:]):
        shapes = [tuple(o.shape[1:]) for o in tree_leaves(out)]
        if shapes != first:
            raise ValueError(f'Candidate {used[0]} gives outputs shaped {first} per image, candidate {j} '
                             f'{shapes}: outputs of a mixed batch must share a shape to stack (token outputs of '
                             f'different lengths do not); run such a batch at one resolution (resolution_index=j)')
    return tree_map(lambda *parts: torch.cat(parts), *outs)


def split_run(x: torch.Tensor, index: torch.Tensor, counts: Sequence[int], fn: Run) -> Any:
    """ Run ``fn(images, j)`` once per chosen resolution j, on the images ``index`` sends there, and return the
    outputs in input order; ``counts`` are the images per resolution (``bincount`` of ``index``)."""
    used = [j for j, c in enumerate(counts) if c]
    if len(used) <= 1:
        return fn(x, used[0] if used else 0)  # one resolution (or an empty batch): no gather / scatter
    order = torch.argsort(index, stable=True)
    groups = x.index_select(0, order).split(list(counts))
    out = _stack_groups([fn(groups[j], j) for j in used], used)
    inverse = torch.argsort(order)
    return tree_map(lambda o: o.index_select(0, inverse), out)


def other_resolution_outputs(x: torch.Tensor, index: torch.Tensor, fn: Run, num_resolutions: int) -> Dict[int, Any]:
    """ Resolution j -> ``fn`` of every image at j, zero for the images ``index`` sends to j (those ran already).

    What ``predictor_grad='all'`` adds (weighted by the zero hard weights) so the predictor's gradient sees every
    resolution; run it without gradient.
    """
    outputs = {}
    for j in range(num_resolutions):
        others = (index != j).nonzero().squeeze(1)
        if others.numel():
            outputs[j] = tree_map(lambda o: o.new_zeros((x.shape[0], *o.shape[1:])).index_copy_(0, others, o),
                                  fn(x.index_select(0, others), j))
    return outputs


def hard_weighted(hard: torch.Tensor, outputs: Dict[int, Any]) -> Optional[Any]:
    """sum_j hard[:, j] x outputs[j] (None for no outputs): the straight-through weights carry the gradient."""
    terms = [tree_map(lambda o: hard[:, j].view(-1, *(1,) * (o.ndim - 1)).to(o.dtype) * o, z)
             for j, z in outputs.items()]
    return tree_map(lambda *parts: sum(parts), *terms) if terms else None


class FullGrid:
    """ Puts the spatial outputs (B, C, H, W) of a smaller candidate on the grid the full resolution's have.

    The grid of each kind of output and input size is read once off a probe at the full resolution and kept.
    """

    def __init__(self):
        self._grids: Dict[Any, Any] = {}

    def clear(self) -> None:
        self._grids.clear()

    def place(self, out: Any, index: int, key: Any, probe: Callable[[], Any],
              channels_last: Union[bool, Callable[[Any], Any]] = False) -> Any:
        """ ``out`` of candidate ``index`` with its maps on the grid of ``probe()`` (the same call at candidate 0).

        ``channels_last`` says which maps are (B, H, W, C): all or none (a bool), or per map (a function of ``out``
        giving a bool for each of its tensors).
        """
        if index == 0 or not any(o.ndim == 4 for o in tree_leaves(out)):
            return out
        layout = channels_last(out) if callable(channels_last) else tree_map(lambda o: channels_last, out)
        if key not in self._grids:
            self._grids[key] = tree_map(lambda o, last: tuple(o.shape[1:3] if last else o.shape[2:]), probe(), layout)
        return tree_map(lambda o, g, last: resample_to(o, g, last) if o.ndim == 4 else o, out, self._grids[key],
                        layout)


class Cascade(NamedTuple):
    """Confidence-cascade routing: which candidates run, in order, and when an image stops."""
    levels: Tuple[int, ...]  # candidate indices in the order they run (cheapest first)
    threshold: float  # an image stops at the first level whose top class probability is >= threshold


def check_levels(levels: Optional[Sequence[int]], num_resolutions: int) -> Tuple[int, ...]:
    """Valid cascade levels; default every candidate, smallest (cheapest) first."""
    levels = tuple(range(num_resolutions - 1, -1, -1)) if levels is None else tuple(int(j) for j in levels)
    if not levels:
        raise ValueError('A cascade needs at least one level (candidate resolution index)')
    bad = [j for j in levels if not 0 <= j < num_resolutions]
    if bad:
        raise ValueError(f'Cascade levels {bad} out of range: the model has {num_resolutions} candidate '
                         f'resolutions, indices 0 (largest) to {num_resolutions - 1}')
    if len(set(levels)) != len(levels):
        raise ValueError(f'Cascade levels must not repeat, got {list(levels)}')
    return levels


def check_cascade(threshold: float, levels: Optional[Sequence[int]], num_resolutions: int) -> Cascade:
    """ A valid ``Cascade``; ``levels`` defaults to every candidate, smallest (cheapest) first.

    ``threshold`` must be a finite number >= 0: 0 stops every image at the first level, anything above 1 sends
    every image through every level.
    """
    levels = check_levels(levels, num_resolutions)
    threshold = float(threshold)
    if not (threshold >= 0 and threshold != float('inf')):
        raise ValueError(f'Cascade threshold must be a finite number >= 0 (a softmax probability), got {threshold}')
    return Cascade(levels, threshold)


def top_probability(logits: torch.Tensor) -> torch.Tensor:
    """(B,) each image's top class probability: the confidence a cascade stops on (float32 softmax)."""
    return logits.float().softmax(-1).amax(-1)


def _put(dst: torch.Tensor, rows: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    dst[rows] = src
    return dst


def _cascade_one(x: torch.Tensor, cascade: Cascade, fn: Run, level_costs: Sequence[float],
                 to_logits: Optional[Callable[[Any], torch.Tensor]], place: Optional[Callable[[Any, int], Any]],
                 ) -> Tuple[Any, torch.Tensor, torch.Tensor]:
    """``cascade_route`` of one image: its stopping test is one Python bool, so no masks, gathers or scatters (each
    eager op costs a batch-1 call tens of us); the same outputs, index and cost."""
    levels, threshold = cascade
    cost = torch.zeros(1, dtype=torch.float32, device=x.device)
    for k, j in enumerate(levels):
        res = fn(x, j)
        cost += level_costs[j]
        if k == len(levels) - 1 or bool(top_probability(res if to_logits is None else to_logits(res)) >= threshold):
            break
    out = res if place is None else place(res, j)
    return out, torch.full((1,), j, dtype=torch.long, device=x.device), cost


def cascade_route(
        x: torch.Tensor,
        cascade: Cascade,
        fn: Run,
        level_costs: Sequence[float],
        to_logits: Optional[Callable[[Any], torch.Tensor]] = None,
        place: Optional[Callable[[Any, int], Any]] = None,
) -> Tuple[Any, torch.Tensor, torch.Tensor]:
    """ Outputs of ``fn(images, j)``, the level that answered and the cost of each image under ``cascade``.

    Each level runs only the images still going; an image pays ``level_costs[j]`` for every level j it ran.
    ``to_logits`` turns ``fn``'s output into class logits for the stopping test (None: ``fn`` returns logits);
    ``place(output, j)`` is applied to the outputs kept (e.g. to put feature maps on a common grid).
    """
    levels, threshold = cascade
    batch = x.shape[0]
    if batch == 1:
        return _cascade_one(x, cascade, fn, level_costs, to_logits, place)
    index = torch.full((batch,), levels[-1], dtype=torch.long, device=x.device)
    cost = torch.zeros(batch, dtype=torch.float32, device=x.device)
    going = torch.arange(batch, device=x.device)
    out = None
    for k, j in enumerate(levels):
        res = fn(x, j)
        cost[going] += level_costs[j]
        last = k == len(levels) - 1  # the last level answers for every image still going
        stop = torch.ones_like(going, dtype=torch.bool) if last else \
            top_probability(res if to_logits is None else to_logits(res)) >= threshold
        kept = tree_map(lambda o: o[stop], res)
        kept = kept if place is None else place(kept, j)
        if out is None:
            out = tree_map(lambda o: o.new_empty((batch, *o.shape[1:])), kept)
        out = tree_map(lambda o, r: _put(o, going[stop], r), out, kept)
        index[going[stop]] = j
        going, x = going[~stop], x[~stop]
        if not going.numel():
            break
    return out, index, cost

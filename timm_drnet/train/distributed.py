""" Collectives of a training run on one or many processes

Every helper works without ``torch.distributed`` initialised too (one process), so the training loop calls them
unconditionally through a ``Distributed`` record of the run's process layout.
"""
from dataclasses import dataclass
from typing import Any, Callable, List

import torch
import torch.distributed as dist

__all__ = ['Distributed', 'all_min', 'any_rank', 'average_gradients_hook', 'barrier', 'broadcast_from_primary',
           'gather', 'reduce_sum']


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the run (timm's ``init_distributed_device`` fills ``rank`` / ``world_size``)."""
    rank: int = 0
    world_size: int = 1
    distributed: bool = False

    @property
    def primary(self) -> bool:
        return self.rank == 0


def _collective_device() -> torch.device:
    """Where tensors for collectives must live: NCCL takes CUDA tensors only."""
    return torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else torch.device('cpu')


def any_rank(flag: bool, ctx: Distributed) -> bool:
    """True on every rank when ``flag`` is true on any."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([float(flag)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_min(values: torch.Tensor, ctx: Distributed) -> torch.Tensor:
    """Element-wise minimum of ``values`` over the ranks (a float tensor), on the CPU."""
    if not ctx.distributed:
        return values
    t = values.to(_collective_device(), copy=True)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t.cpu()


def gather(obj: Any, ctx: Distributed) -> List[Any]:
    """``obj`` of every rank, in rank order (a one-element list without distributed training)."""
    if not ctx.distributed:
        return [obj]
    objs = [None] * ctx.world_size
    dist.all_gather_object(objs, obj)
    return objs


def reduce_sum(t: torch.Tensor, ctx: Distributed) -> torch.Tensor:
    """Sum of ``t`` over the ranks, on the CPU."""
    if ctx.distributed:
        t = t.to(_collective_device(), copy=True)
        dist.all_reduce(t)
        t = t.cpu()
    return t


def average_gradients_hook(ctx: Distributed) -> Callable[[torch.Tensor], torch.Tensor]:
    """A tensor gradient hook that averages the gradient over the ranks: for parameters outside DDP (a loss's)."""
    return lambda grad: reduce_sum(grad, ctx).to(grad.device, grad.dtype) / ctx.world_size


def broadcast_from_primary(make: Callable[[], Any], ctx: Distributed) -> Any:
    """``make()`` run on rank 0 only, its result sent to every rank."""
    objs = [make() if ctx.primary else None]
    if ctx.distributed:
        dist.broadcast_object_list(objs, src=0)
    return objs[0]


def barrier(ctx: Distributed) -> None:
    if ctx.distributed:
        dist.barrier()

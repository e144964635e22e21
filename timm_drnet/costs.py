""" Per-resolution costs

DRNet's FLOPs regulariser and every reported average need the cost C_j of running the backbone at
each candidate resolution, plus the predictor's fixed cost. MACs are counted by
``torch.utils.flop_counter`` on a real forward pass (matmul / conv FLOPs / 2), never by hand formulas;
latency tables measured on the current device can replace them (``unit='ms'``).
"""
import contextlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterator, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['CostTable', 'count_macs', 'eval_mode', 'measure_latency_ms']


@dataclass(frozen=True)
class CostTable:
    """ Cost of each candidate resolution's backbone pass and of the predictor, in ``unit``.

    ``unit`` is 'gmacs' (counted) or 'ms' (measured latency). Per-image cost = backbone[j] + predictor.
    """
    input_size: Tuple[int, int, int]
    backbone: Tuple[float, ...]
    predictor: float
    unit: str = 'gmacs'

    def per_image(self, index: torch.Tensor) -> torch.Tensor:
        """Cost of each image routed to resolution ``index`` (long tensor), predictor included."""
        costs = torch.tensor(self.backbone, dtype=torch.float32, device=index.device)
        return costs[index] + self.predictor

    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict) -> 'CostTable':
        return cls(
            input_size=tuple(d['input_size']), backbone=tuple(float(c) for c in d['backbone']),
            predictor=float(d['predictor']), unit=d.get('unit', 'gmacs'),
        )


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Temporarily put ``module`` in eval mode (BN running stats untouched), restoring every flag after."""
    flags = [m.training for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in zip(module.modules(), flags):
            m.training = flag


def _probe(module: nn.Module, input_size: Sequence[int]) -> torch.Tensor:
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device('cpu')
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.zeros(1, *input_size, device=device, dtype=dtype)


def count_macs(module: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-accumulates of one forward of ``module`` on a single (C, H, W) image, in eval mode."""
    x = _probe(module, input_size)
    with eval_mode(module), torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


def measure_latency_ms(
        fn: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        repeats: int = 20,
        warmup: int = 3,
) -> float:
    """Median wall time of ``fn(x)`` in milliseconds over ``repeats`` runs (device synchronised)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            fn(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.)
    return statistics.median(times)

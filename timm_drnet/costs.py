""" Per-resolution costs

DRNet's FLOPs regulariser and every reported average need the cost C_j of running the backbone at
each candidate resolution, plus the predictor's fixed cost. MACs are counted by
``torch.utils.flop_counter`` on a real forward pass (matmul / conv FLOPs / 2), never by hand formulas;
latency tables measured on the current device can replace them (``unit='ms'``).
"""
import contextlib
import functools
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ['CostTable', 'CostTables', 'count_cost_table', 'count_macs', 'eval_mode', 'measure_cost_table',
           'measure_latency_ms', 'unit_label']


def unit_label(unit: str) -> str:
    """A cost unit as printed: 'gmacs' -> 'GMACs', 'ms' stays."""
    return 'GMACs' if unit == 'gmacs' else unit


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
        return self._route_costs.to(index.device)[index]

    @functools.cached_property
    def _route_costs(self) -> torch.Tensor:
        """backbone[j] + predictor for each j (float32), made once: a routed call at batch 1 pays every op it runs."""
        return torch.tensor(self.backbone, dtype=torch.float32) + self.predictor

    def describe(self, resolutions: Sequence[float]) -> str:
        """One line: each candidate's backbone cost (named by its scale) and the predictor's."""
        unit = unit_label(self.unit)
        return ', '.join(f'{r:g}x {c:.4g} {unit}' for r, c in zip(resolutions, self.backbone)) + \
            f', predictor {self.predictor:.4g} {unit}'

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


class CostTables:
    """ The cost tables a DRNet routes, trains and reports with, one per input size (C, H, W).

    Counted GMACs by default, each table counted on first use and kept; or measured tables installed with
    ``install`` (latency in ms), whose unit then is the unit of every cost.
    """

    def __init__(self):
        self._tables: Dict[Tuple[int, int, int], CostTable] = {}

    @property
    def unit(self) -> str:
        """'gmacs', or the unit of the installed measured tables."""
        return next(iter(self._tables.values())).unit if self._tables else 'gmacs'

    def measured(self) -> List[CostTable]:
        """The installed measured tables (none while costs are counted GMACs)."""
        return [t for t in self._tables.values() if t.unit != 'gmacs']

    def get(self, input_size: Tuple[int, int, int], count: Callable[[Tuple[int, int, int]], CostTable]) -> CostTable:
        """The table for ``input_size``; counted by ``count(input_size)`` the first time while costs are GMACs."""
        table = self._tables.get(input_size)
        if table is None:
            if self.unit != 'gmacs':
                raise KeyError(f'No {self.unit} cost table for input size {input_size}; '
                               f'measure one and install it with set_cost_table()')
            table = self._tables[input_size] = count(input_size)
        return table

    def install(self, table: CostTable, num_resolutions: int) -> None:
        """Use ``table`` for its input size; a table of another unit replaces every table held."""
        if len(table.backbone) != num_resolutions:
            raise ValueError(f'Cost table has {len(table.backbone)} entries, model has {num_resolutions} '
                             f'resolutions')
        if table.unit != self.unit:
            self._tables.clear()
        self._tables[tuple(table.input_size)] = table

    def reset(self) -> None:
        """Drop every table: costs are counted GMACs again."""
        self._tables.clear()


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


def count_cost_table(model: nn.Module, input_size: Sequence[int]) -> CostTable:
    """ GMACs of a DRNet's backbone at each candidate and of its predictor, for one image of ``input_size``.

    Counted with ``torch.utils.flop_counter`` on real forward passes, each candidate through its own branch.
    """
    input_size = tuple(int(s) for s in input_size)
    backbone = []
    for j, size in enumerate(model.candidate_sizes(*input_size[1:])):
        model.set_resolution(j)
        backbone.append(count_macs(model.backbone, (input_size[0], *size)) / 1e9)
    predictor = count_macs(model.predictor, (input_size[0], model.predictor_size, model.predictor_size)) / 1e9
    return CostTable(input_size, tuple(backbone), predictor, 'gmacs')


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


def measure_cost_table(
        model: nn.Module,
        input_size: Optional[Sequence[int]] = None,
        batch_size: int = 1,
        repeats: int = 20,
        warmup: int = 3,
) -> CostTable:
    """ Measured latency per image, in ms, of each candidate resolution of a DRNet and of its predictor.

    Each entry is the median of ``repeats`` timed runs of a batch of ``batch_size`` images of ``input_size``
    (C, H, W; default the model's), divided by ``batch_size``, on the model's device and dtype in eval
    mode. A resolution's run includes the resize from the input size; the predictor's, its own resize.
    Wrap the call in ``torch.autocast`` to time mixed precision. Install the table with
    ``model.set_cost_table``; ``CostTable.to_dict`` / ``from_dict`` store it with a checkpoint.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f'Need batch_size >= 1, repeats >= 1 and warmup >= 0, got {batch_size}, {repeats}, {warmup}')
    input_size = tuple(int(s) for s in (input_size or model.default_input_size()))
    if len(input_size) != 3:
        raise ValueError(f'input_size must be (C, H, W), got {input_size}')
    probe = _probe(model, input_size)
    x = torch.randn((batch_size, *input_size), device=probe.device, dtype=probe.dtype)
    model.check_input(x)
    with eval_mode(model):
        backbone = tuple(
            measure_latency_ms(functools.partial(model.forward_resolution, index=j), x, repeats, warmup) / batch_size
            for j in range(model.num_resolutions))
        predictor = measure_latency_ms(model.predict_logits, x, repeats, warmup) / batch_size
    return CostTable(input_size, backbone, predictor, 'ms')

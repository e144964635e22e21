""" Compiled regions for inference

A routed forward cannot be one static graph: how many images go to each resolution changes from batch to batch.
``torch.compile`` therefore compiles the predictor and the backbone at each resolution as separate regions, and
the routing between them (argmax, split, scatter) stays eager. Each region sees static spatial sizes and a
size-oblivious dynamic batch dimension, so one graph per resolution serves every group size after a warm-up call
at each resolution. Exception: on CPU, PyTorch picks the convolution backend by batch size, which adds a graph
per batch-size bucket (torch 2.14: 16+ images; with inductor also a single image), so warm up with the batch
sizes you serve. A new input size, dtype or memory format compiles new graphs; training runs eagerly.
"""
from typing import Callable, Dict, Sequence

import torch
import torch.fx.experimental._config
from torch import nn

__all__ = ['compile_methods', 'run_compiled']


def compile_methods(cls: type, names: Sequence[str], **compile_kwargs) -> Dict[str, Callable]:
    """ ``torch.compile`` of the methods ``names`` of class ``cls`` (called as ``fn(module, x, *args)``).

    ``dynamic=False`` unless ``compile_kwargs`` say otherwise: with dynamo's automatic dynamic shapes, a second
    input size makes the spatial sizes symbolic, and inductor's C++ codegen then stalls in sympy on size-dependent
    padding (timm's Lite0 with TF "same" padding compiled at 224 then 168 px: over 13 min on a 2-core CPU, against
    under a minute per size with static sizes). The batch dimension stays dynamic (``run_compiled``).
    """
    compile_kwargs = {'dynamic': False, **compile_kwargs}
    return {name: torch.compile(getattr(cls, name), **compile_kwargs) for name in names}


def run_compiled(fn: Callable, module: nn.Module, x: torch.Tensor, *args) -> torch.Tensor:
    """ Call a compiled method on a batch whose size may change from call to call.

    The batch dimension is marked dynamic and size-oblivious, so a group of one image reuses the graph
    instead of specialising a new one for it.
    """
    torch._dynamo.mark_dynamic(x, 0)
    with torch.fx.experimental._config.patch(backed_size_oblivious=True):
        return fn(module, x, *args)

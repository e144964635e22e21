""" Compiled regions for inference

A routed forward cannot be one static graph: how many images go to each resolution changes from batch to batch.
``torch.compile`` therefore compiles the predictor with its selection (scores, argmax, images per resolution) and
the backbone at each resolution as separate regions, and the split and scatter between them stay eager. Each region
sees static spatial sizes. Groups of two or more images share one graph per resolution, whose batch dimension is
dynamic and size-oblivious, after a warm-up call at each resolution; a single image (every image, at batch 1) runs
a graph of its own with every size fixed, which is faster on CPU (Lite0's regions, one image: 168 px 6.95 against
7.57 ms, 112 px 5.12 against 5.21; docs/results.md). On CPU, PyTorch also picks the convolution backend by batch
size, which adds a graph per batch-size bucket (torch 2.14: 16+ images), so warm up with the batch sizes you serve.
A new input size, dtype or memory format compiles new graphs; training runs eagerly.
"""
import types
from typing import Callable, Dict, Sequence

import torch
import torch.fx.experimental._config
from torch import nn

__all__ = ['CompiledMethod', 'compile_methods']


def _own_code(fn: Callable) -> Callable:
    """A copy of function ``fn`` with a code object of its own: dynamo keeps its graphs (and its recompile limit) per
    code object, so the copy's graphs are kept apart from the original's."""
    copy = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__qualname__, copy.__kwdefaults__ = fn.__qualname__, fn.__kwdefaults__
    return copy


class CompiledMethod:
    """ ``torch.compile`` of a method of a class (called as ``fn(module, x, *args)``) for batches of any size.

    Two compiled copies: ``single`` for one image, every size static; ``batched`` for two or more, the batch
    dimension marked dynamic and size-oblivious, so every group size reuses one graph instead of specialising one
    per size. ``dynamic=False`` unless ``compile_kwargs`` say otherwise: with dynamo's automatic dynamic shapes, a
    second input size makes the spatial sizes symbolic, and inductor's C++ codegen then stalls in sympy on
    size-dependent padding (timm's Lite0 with TF "same" padding compiled at 224 then 168 px: over 13 min on a
    2-core CPU, against under a minute per size with static sizes).
    """

    def __init__(self, fn: Callable, **compile_kwargs):
        compile_kwargs = {'dynamic': False, **compile_kwargs}
        self.single = torch.compile(_own_code(fn), **compile_kwargs)
        self.batched = torch.compile(fn, **compile_kwargs)

    def __call__(self, module: nn.Module, x: torch.Tensor, *args) -> torch.Tensor:
        if x.shape[0] == 1:
            return self.single(module, x, *args)
        torch._dynamo.mark_dynamic(x, 0)
        with torch.fx.experimental._config.patch(backed_size_oblivious=True):
            return self.batched(module, x, *args)


def compile_methods(cls: type, names: Sequence[str], **compile_kwargs) -> Dict[str, CompiledMethod]:
    """``CompiledMethod`` of each method ``names`` of class ``cls``; ``compile_kwargs`` go to ``torch.compile``."""
    return {name: CompiledMethod(getattr(cls, name), **compile_kwargs) for name in names}

""" TensorFlow "SAME" padding fixed for one input size, for export

timm's TF ports (``tf_efficientnet_*``, ``tf_mobilenetv3_*``, ...) pad their strided convolutions with ``Conv2dSame``,
which works the padding out from the input's size on every call. Traced into ONNX, that is a chain of ``Shape``,
``Gather``, ``Cast``, ``Div``, ``Ceil`` ... nodes per convolution (Lite0: 629 nodes in all, against 274 with the
padding fixed), which onnxruntime runs on every call. An ONNX graph of DRNet has a fixed input size, so the padding
is known: ``fix_same_padding`` swaps each ``Conv2dSame`` for a ``StaticPadConv2d`` holding it (Lite0 at 112 px, one
image, onnxruntime on a 2-core CPU: 1.35 against 1.46 ms; 224 px: 3.92 against 4.13 ms).
"""
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame, get_same_padding
from torch import nn

from .probe import probe_forward

__all__ = ['StaticPadConv2d', 'fix_same_padding']


class StaticPadConv2d(nn.Conv2d):
    """ A convolution after a fixed zero padding ``pad`` (left, right, top, bottom), sharing ``conv``'s parameters:
    timm's ``Conv2dSame`` at one input size."""

    def __init__(self, conv: nn.Conv2d, pad: Tuple[int, int, int, int]):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                         conv.groups, conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        self.weight, self.bias = conv.weight, conv.bias
        self.pad = tuple(int(p) for p in pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))

    def extra_repr(self) -> str:
        return f'{super().extra_repr()}, pad={self.pad}'


def fix_same_padding(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """ ``module`` with each ``Conv2dSame`` that a forward of ``example`` calls once replaced, in place, by a
    ``StaticPadConv2d`` padding for the size it saw there. Only for inputs of ``example``'s size from then on."""
    sizes: Dict[nn.Module, list] = {}

    def record(conv: nn.Module, args: Tuple[torch.Tensor, ...]) -> None:
        sizes.setdefault(conv, []).append(tuple(args[0].shape[-2:]))

    convs = [m for m in module.modules() if isinstance(m, Conv2dSame)]
    if not convs:  # nothing to fix: no probe forward
        return module
    probe_forward(module, example, [m.register_forward_pre_hook(record) for m in convs])
    for name, conv in list(module.named_modules()):
        if not name or conv not in sizes or len(set(sizes[conv])) != 1:  # the root, not run, or run at several sizes
            continue
        (ih, iw), (kh, kw) = sizes[conv][0], conv.weight.shape[-2:]
        pad_h = get_same_padding(ih, kh, conv.stride[0], conv.dilation[0])
        pad_w = get_same_padding(iw, kw, conv.stride[1], conv.dilation[1])
        parent, _, attr = name.rpartition('.')
        setattr(module.get_submodule(parent), attr,
                StaticPadConv2d(conv, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)))
    return module

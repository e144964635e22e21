""" Antialiased bilinear resize as fixed taps

DRNet resizes with ``F.interpolate(mode='bilinear', antialias=True)``. The TorchScript ONNX exporter has
no symbolic for that kernel, and ONNX ``Resize(antialias=1)`` filters differently (max abs difference
0.07-0.2 on unit-variance images with onnxruntime 1.32). For a fixed input and output size the resize is
a separable linear map in which each output row (column) mixes a few neighbouring input rows (columns).
``TapResize`` reads those indices and weights off PyTorch's own kernel, by resizing a one-hot basis, and
applies them with gather, multiply and sum: ops every exporter and runtime has, at a few MACs per pixel.
"""
from typing import Tuple

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ['TapResize', 'resize_taps']


def resize_taps(in_len: int, out_len: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """ Input indices (out_len, K) and weights (out_len, K) of PyTorch's antialiased bilinear resize of one axis.

    Output element o is ``sum_k weight[o, k] * input[index[o, k]]``; taps past a row's support have weight 0.
    """
    # channel i is the one-hot row i, 2 columns wide (the kernel mishandles 1-wide images); float32
    # like the images, so the taps are bit for bit the weights the kernel uses on them
    basis = torch.eye(in_len).view(1, in_len, in_len, 1).expand(-1, -1, -1, 2)
    resized = F.interpolate(basis, size=(out_len, 2), mode='bilinear', align_corners=False, antialias=True)
    matrix = resized[0, :, :, 0].t()  # (out_len, in_len): row o holds the weights of output o
    nonzero = matrix != 0
    first = nonzero.int().argmax(1)
    last = in_len - 1 - nonzero.flip(1).int().argmax(1)
    taps = int((last - first).max()) + 1
    index = first.unsqueeze(1) + torch.arange(taps)
    inside = index <= last.unsqueeze(1)
    index = index.clamp_max(in_len - 1)
    weight = matrix.gather(1, index) * inside
    return index, weight


class TapResize(nn.Module):
    """ ``F.interpolate(x, out_size, mode='bilinear', antialias=True)`` for inputs of ``in_size``, as fixed taps.

    An axis whose size does not change is left alone, as PyTorch does.
    """

    def __init__(self, in_size: Tuple[int, int], out_size: Tuple[int, int]):
        super().__init__()
        self.in_size = tuple(int(s) for s in in_size)
        self.out_size = tuple(int(s) for s in out_size)
        for axis, n_in, n_out in zip('hw', self.in_size, self.out_size):
            index, weight = resize_taps(n_in, n_out) if n_in != n_out else (None, None)
            self.register_buffer(f'index_{axis}', index, persistent=False)
            self.register_buffer(f'weight_{axis}', weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and tuple(x.shape[-2:]) != self.in_size:  # an ONNX graph fixes the size
            raise ValueError(f'TapResize was built for {self.in_size} inputs, got {tuple(x.shape[-2:])}')
        if self.index_w is not None:  # columns: (B, C, H, W) -> (B, C, H, W', K) -> (B, C, H, W')
            taps = x.index_select(3, self.index_w.flatten()).unflatten(3, self.index_w.shape)
            x = (taps * self.weight_w).sum(4)
        if self.index_h is not None:  # rows: (B, C, H, W') -> (B, C, H', K, W') -> (B, C, H', W')
            taps = x.index_select(2, self.index_h.flatten()).unflatten(2, self.index_h.shape)
            x = (taps * self.weight_h.unsqueeze(-1)).sum(3)
        return x

    def extra_repr(self) -> str:
        return f'in_size={self.in_size}, out_size={self.out_size}'

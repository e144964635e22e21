""" Antialiased bilinear resize as matrix products and strided convolutions

DRNet resizes with ``F.interpolate(mode='bilinear', antialias=True)``. The TorchScript ONNX exporter has
no symbolic for that kernel, and ONNX ``Resize(antialias=1)`` filters differently (max abs difference
0.07-0.2 on unit-variance images with onnxruntime 1.32). For a fixed input and output size the resize is
a separable linear map: one matrix per axis. ``TapResize`` reads each matrix off PyTorch's own kernel, by
resizing a one-hot basis. Where an axis shrinks by a whole factor (0.5x), every output mixes the same taps
one stride further on, and the axis runs as a grouped strided ``Conv`` (224 -> 112 px, onnxruntime, 2-core
CPU: 0.08 against 0.13 ms for one image, 2.5 against 4.1 ms for 32). Any other axis runs as a ``MatMul``:
the matrix is mostly zeros, but a dense product beats a gather of the few taps by 3 to 6x (224 -> 112 px:
0.24 against 0.99 ms for one image, 20 against 68 ms for 32).
"""
from typing import Optional, Tuple

import torch
from torch import nn
import torch.nn.functional as F

__all__ = ['TapResize', 'AxisResize', 'resize_matrix', 'strided_taps']


def resize_matrix(in_len: int, out_len: int) -> torch.Tensor:
    """ (out_len, in_len) matrix of PyTorch's antialiased bilinear resize of one axis: output o is
    ``sum_i matrix[o, i] * input[i]``. """
    # channel i is the one-hot row i, 2 columns wide (the kernel mishandles 1-wide images); float32
    # like the images, so the entries are bit for bit the weights the kernel uses on them
    basis = torch.eye(in_len).view(1, in_len, in_len, 1).expand(-1, -1, -1, 2)
    resized = F.interpolate(basis, size=(out_len, 2), mode='bilinear', align_corners=False, antialias=True)
    return resized[0, :, :, 0].t().contiguous()


def strided_taps(matrix: torch.Tensor) -> Optional[Tuple[torch.Tensor, int, torch.Tensor]]:
    """ ``matrix`` (out_len, in_len) as a convolution of stride ``in_len // out_len``: (kernel, padding, scale) with
    output o ``scale[o] * sum_k kernel[k] * input[stride * o - padding + k]``, the input zero-padded on both sides;
    None where it is not one (the axis does not shrink by a whole factor). PyTorch's kernel renormalises the taps
    that fall off the edge, hence the scale of each output."""
    out_len, in_len = matrix.shape
    stride = in_len // out_len
    if stride < 2 or stride * out_len != in_len:
        return None
    middle = out_len // 2
    taps = matrix[middle].nonzero().flatten()
    kernel = matrix[middle, taps[0]:taps[-1] + 1]
    padding = stride * middle - int(taps[0])
    if padding < 0 or (out_len - 1) * stride + len(kernel) - in_len != 2 * padding:
        return None
    band = torch.zeros(out_len, in_len + 2 * padding)
    for o in range(out_len):
        band[o, stride * o:stride * o + len(kernel)] = kernel
    band = band[:, padding:padding + in_len]
    scale = 1. / band.sum(1)
    if not torch.allclose(band * scale[:, None], matrix, rtol=0., atol=1e-7):
        return None
    return kernel, padding, scale


class AxisResize(nn.Module):
    """ One axis of ``TapResize`` (``dim`` -1: width, -2: height): a grouped strided convolution over ``channels``
    where ``strided_taps`` finds one, else a product with the axis's resize matrix."""

    def __init__(self, in_len: int, out_len: int, dim: int, channels: int):
        super().__init__()
        self.dim = dim
        matrix = resize_matrix(in_len, out_len)
        conv = strided_taps(matrix)
        if conv is None:
            # rows: (H', H) @ (B, C, H, W'); columns: (B, C, H, W) @ (W, W'), hence stored transposed
            self.register_buffer('matrix', matrix.t().contiguous() if dim == -1 else matrix, persistent=False)
            self.register_buffer('weight', None, persistent=False)
            return
        kernel, padding, scale = conv
        self.register_buffer('matrix', None, persistent=False)
        shape = (channels, 1, 1, -1) if dim == -1 else (channels, 1, -1, 1)
        self.register_buffer('weight', kernel.expand(channels, -1).reshape(shape).contiguous(), persistent=False)
        self.register_buffer('scale', scale if dim == -1 else scale[:, None].contiguous(), persistent=False)
        self.stride = (1, in_len // out_len) if dim == -1 else (in_len // out_len, 1)
        self.padding = (0, padding) if dim == -1 else (padding, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None:
            return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding, groups=self.weight.shape[0]
                            ) * self.scale
        return x @ self.matrix if self.dim == -1 else self.matrix @ x


class TapResize(nn.Module):
    """ ``F.interpolate(x, out_size, mode='bilinear', antialias=True)`` for inputs of ``channels`` x ``in_size``, as
    matrix products and strided convolutions (``AxisResize``).

    An axis whose size does not change is left alone, as PyTorch does. Results match PyTorch's kernel to float
    rounding (the sums run in another order).
    """

    def __init__(self, in_size: Tuple[int, int], out_size: Tuple[int, int], channels: int = 3):
        super().__init__()
        self.in_size = tuple(int(s) for s in in_size)
        self.out_size = tuple(int(s) for s in out_size)
        self.channels = int(channels)
        (h_in, w_in), (h_out, w_out) = self.in_size, self.out_size
        self.resize_w = AxisResize(w_in, w_out, -1, channels) if w_in != w_out else nn.Identity()
        self.resize_h = AxisResize(h_in, h_out, -2, channels) if h_in != h_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and tuple(x.shape[-3:]) != (self.channels, *self.in_size):  # ONNX fixes them
            raise ValueError(f'TapResize was built for {(self.channels, *self.in_size)} (C, H, W) inputs, '
                             f'got {tuple(x.shape[-3:])}')
        return self.resize_h(self.resize_w(x))

    def extra_repr(self) -> str:
        return f'in_size={self.in_size}, out_size={self.out_size}, channels={self.channels}'

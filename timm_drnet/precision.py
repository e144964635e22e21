""" Mixed precision for training and evaluation

``--amp`` as timm's scripts have it: autocast to float16 or bfloat16 on a GPU, with a loss scaler for float16
training. On a CPU the run stays in float32, with a warning.
"""
import logging
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Callable, ContextManager, Optional

import torch
from timm.utils import NativeScaler

__all__ = ['Precision', 'create_precision', 'AMP_DTYPES']

_logger = logging.getLogger(__name__)

AMP_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """How a run computes: ``autocast()`` around forwards, and a loss scaler for float16 training (else None)."""
    autocast: Callable[[], ContextManager]
    loss_scaler: Optional[NativeScaler] = None
    dtype: Optional[torch.dtype] = None  # the autocast dtype, None for float32


def create_precision(amp: bool, amp_dtype: str, device: torch.device, training: bool = False) -> Precision:
    """ float16 / bfloat16 autocast on CUDA when ``amp``, with a loss scaler for float16 ``training``; else float32."""
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f'amp_dtype must be one of {sorted(AMP_DTYPES)}, got {amp_dtype!r}')
    if not amp:
        return Precision(suppress)
    if device.type != 'cuda':
        _logger.warning(f'Mixed precision needs a GPU; {"training" if training else "evaluating"} in float32.')
        return Precision(suppress)
    dtype = AMP_DTYPES[amp_dtype]
    scaler = NativeScaler(device='cuda') if training and dtype == torch.float16 else None
    return Precision(partial(torch.autocast, device_type='cuda', dtype=dtype), scaler, dtype)

""" Keep freed CPU memory for the next batch

glibc's malloc hands each block over 128 KiB (up to its dynamic threshold, at most 32 MiB) to the kernel on its own
``mmap`` and returns it with ``munmap`` when the tensor is freed. A forward pass on a batch of large images frees and
allocates its activations again on every call, so every call touches fresh pages and pays one page fault per 4 KiB
(Lite0 at 224 px and batch 32: over half a million per eager forward, most of its time; ``docs/deployment.md``).
ONNX Runtime keeps its own arena and does not pay them; eager PyTorch, ``torch.compile`` and AOTInductor do, and so
does every static model deployed that way. ``keep_freed_memory`` makes malloc serve every block from its heap and
keep freed memory there, so a batch reuses the pages the one before it touched; the process then holds its peak
memory. Batch 1 allocates little and gains nothing.
"""
import ctypes
import ctypes.util
import sys
from typing import Optional

__all__ = ['keep_freed_memory']

# mallopt parameters and glibc's defaults for them (malloc/malloc.h, mallopt(3))
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_KEEP_TRIM_THRESHOLD = 2 ** 31 - 1  # the largest value mallopt takes (an int): never give the heap's top back

_libc: Optional[ctypes.CDLL] = None


def _glibc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library('c') if sys.platform.startswith('linux') else None
        libc = ctypes.CDLL(name) if name else None
        if libc is None or not hasattr(libc, 'gnu_get_libc_version'):
            raise RuntimeError(f'keep_freed_memory needs glibc (Linux); this is {sys.platform} without it: on other '
                               f'systems preload an allocator that keeps freed memory (jemalloc, tcmalloc)')
        _libc = libc
    return _libc


def keep_freed_memory(enabled: bool = True) -> None:
    """ Make this process's malloc keep freed memory for reuse (``enabled``) or give it back as glibc's defaults do.

    Sets ``M_MMAP_MAX`` to 0 (every block from the heap) and ``M_TRIM_THRESHOLD`` to its maximum (freed memory stays
    in the heap); ``enabled=False`` sets both back to glibc's default values and trims the heap (memory the heap
    still holds serves the blocks that fit it; glibc's dynamic mmap threshold, for blocks under 32 MiB, stays off).
    Call it once before serving. Raises RuntimeError off glibc.
    """
    libc = _glibc()
    mmap_max, trim = (0, _KEEP_TRIM_THRESHOLD) if enabled else (_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
    if not (libc.mallopt(_M_MMAP_MAX, mmap_max) and libc.mallopt(_M_TRIM_THRESHOLD, trim)):
        raise RuntimeError(f'mallopt refused M_MMAP_MAX={mmap_max} or M_TRIM_THRESHOLD={trim}')
    if not enabled:
        libc.malloc_trim(0)

"""Host memory allocator settings for training on CPU.

glibc's malloc serves large blocks (an activation of 4x64x256x256) with fresh ``mmap`` calls
and hands freed memory back to the kernel (``munmap``, heap trimming). A training step frees
and reallocates the same large blocks every step, so each step pays for zero-filled pages
again: thousands of page faults per step. Measured on the development CPU
(`README`, "What the defaults buy"): 3-15 % of the step time, more for small fast models,
and more for Lightning's step than for a plain loop because the two free blocks in a
different order. Keeping freed memory in the process removes the faults; the process's
memory then stays at its peak between steps instead of falling back (the peak is needed
again at the next step anyway).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to serve every block from its heaps (no ``mmap`` per block) and
    not to trim them unless 2 GiB at the top are free. Affects this process and the
    DataLoader workers it forks later. Returns False where it does not apply (not Linux
    with glibc); PyTorch's own CUDA allocator is not affected."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    ok = mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, _INT_MAX) == 1
    if not ok:
        log.warning("mallopt refused the allocator settings; training runs unchanged")
    return ok

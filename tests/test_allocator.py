"""The training default that keeps freed host memory (glibc malloc settings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Allocates and fills a 64 MiB block, then frees it; prints what glibc's mallinfo2 says
# while it is live and after: new bytes in mmap'd blocks, and new free bytes kept in the heap.
PROBE = """
import ctypes, sys
import numpy as np
sys.path.insert(0, {src!r})
if {keep}:
    from seglab.allocator import keep_freed_memory
    assert keep_freed_memory()

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks "
                                              "fsmblks uordblks fordblks keepcost").split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2()
a = np.ones(2**23)
live = libc.mallinfo2()
del a
freed = libc.mallinfo2()
print(live.hblkhd - before.hblkhd, freed.fordblks - before.fordblks)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_keep_freed_memory_serves_large_blocks_from_the_heap_and_keeps_them():
    import seglab

    src = str(Path(seglab.__file__).parents[1])

    def probe(keep: bool) -> tuple[int, int]:
        code = PROBE.format(src=src, keep=keep)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        mmapped, kept = map(int, out.stdout.split())
        return mmapped, kept

    block = 2**26  # 64 MiB
    mmapped, kept = probe(keep=False)  # glibc's default: its own mmap, unmapped when freed
    assert mmapped >= block and kept < 0.1 * block
    mmapped, kept = probe(keep=True)  # from the heap, and still there after the free
    assert mmapped == 0 and kept > 0.9 * block

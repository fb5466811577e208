"""Peak memory of a measured phase: the allocator's peak on CUDA, the process's resident set
(from ``/proc/self/status``) on CPU. The reproduction report measures its runs with it too."""

from __future__ import annotations

import ctypes
import gc
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _status_mb(field: str) -> float | None:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in MB; None if absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def rss_mb() -> float:
    """The resident memory of this process now, in MB (NaN where the kernel does not say)."""
    now = _status_mb("VmRSS")
    return float("nan") if now is None else now


def peak_rss_mb() -> float:
    """The peak resident memory of this process since the last ``reset_peak_rss``, in MB."""
    peak = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if peak is None else peak


def reset_peak_rss() -> bool:
    """Frees what can be freed and resets the kernel's peak-RSS mark (VmHWM) of this
    process, so the next phase's peak is its own. False where Linux does not allow it."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed heap pages to the OS
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(fn: Callable[..., list[float]], *args: Any) -> tuple[list[float], float]:
    """Runs a training phase in this process and returns (step times, peak memory in MB):
    the allocator's peak on CUDA, the process's peak RSS on CPU. (A forked child would
    isolate memory better, but OpenMP's thread pool deadlocks after fork.)"""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        times = fn(*args)
        return times, torch.cuda.max_memory_allocated() / 2**20
    reset_peak_rss()
    times = fn(*args)
    return times, peak_rss_mb()

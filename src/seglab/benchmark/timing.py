"""Timing helpers: the device to time on, waiting for it, and medians with their spread."""

from __future__ import annotations

import statistics

import torch


def default_device() -> torch.device:
    """Where the benchmark runs: the GPU when there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    """Waits for the device's queued work, so that a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_spread(rates: list[float]) -> dict[str, float]:
    """The median rate and the spread (max - min) / median."""
    median = statistics.median(rates)
    return {"median": median, "spread": (max(rates) - min(rates)) / median}


def summary(times: list[float], images: int, repeats: int) -> dict[str, float]:
    """Images/s as the median over ``repeats`` equal groups of steps, and the spread
    (max - min) / median between the groups."""
    size = max(1, len(times) // repeats)
    groups = [times[i : i + size] for i in range(0, size * repeats, size)]
    return median_spread([images * len(g) / sum(g) for g in groups if g])

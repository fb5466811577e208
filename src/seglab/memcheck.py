"""Does memory stay flat over a long run? ``python src/memcheck.py`` trains the default config
(or any other: it takes the training config's overrides) for ``memcheck.steps`` steps with
everything a real run does (validation, metrics, TensorBoard images, checkpoints) and records
the process's resident memory every few steps. A leak (tensors kept in a list, a growing
logger buffer, a figure never closed) shows as growth after the warm-up; allocator noise and
caches filled once do not. Writes ``memory.json`` and exits 1 when growth exceeds the limit."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.utilities import rank_zero_only

from seglab import pipeline
from seglab.errors import InputError, SeglabError

log = logging.getLogger(__name__)


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process and its child processes (DataLoader workers), in MB."""
    total = 0.0
    for p in [str(pid), *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:  # a worker that just exited
            continue
    return total


def _children(pid: int | str) -> list[str]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += (task / "children").read_text().split()
        except OSError:
            continue
    return out


class MemoryTrace(L.Callback):
    """Records (global step, RSS in MB) every ``every_n_steps`` training steps and writes them
    to ``path`` (JSON) when training ends."""

    def __init__(self, path: str, every_n_steps: int = 20) -> None:
        if not Path("/proc/self/status").exists():
            raise SeglabError("MemoryTrace reads /proc: it needs Linux")
        self.path, self.every = Path(path), every_n_steps
        self.trace: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every == 0:
            self.trace.append((trainer.global_step, rss_mb(os.getpid())))

    @rank_zero_only
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"steps_rss_mb": self.trace}))


def analyse(trace: list[tuple[int, float]], warmup_steps: int) -> dict[str, float]:
    """Growth after the warm-up: the median RSS of the last tenth of the samples minus that of
    the first tenth after warm-up (medians, so one allocator spike does not count), and the
    least-squares slope in MB per 1000 steps."""
    steps, rss = np.array([s for s, _ in trace], float), np.array([r for _, r in trace])
    keep = steps >= warmup_steps
    if keep.sum() < 10:
        raise InputError(
            f"only {int(keep.sum())} memory samples after the {warmup_steps} warm-up steps; "
            "raise memcheck.steps or lower memcheck.every_n_steps / memcheck.warmup_steps"
        )
    steps, rss = steps[keep], rss[keep]
    tenth = max(1, len(rss) // 10)
    return {
        "rss_start_mb": float(np.median(rss[:tenth])),
        "rss_end_mb": float(np.median(rss[-tenth:])),
        "rss_max_mb": float(rss.max()),
        "growth_mb": float(np.median(rss[-tenth:]) - np.median(rss[:tenth])),
        "slope_mb_per_1000_steps": float(np.polyfit(steps, rss, 1)[0] * 1000),
        "samples": int(len(rss)),
    }


def run(cfg: Any) -> dict[str, Any]:
    """Trains with ``cfg`` (a composed ``memcheck`` config) and returns the trace with its
    analysis and verdict (``flat``), also written to ``memory.json`` in the run folder."""
    pipeline.train(cfg)
    out = Path(cfg.paths.output_dir) / "memory.json"
    result = json.loads(out.read_text())
    result.update(analyse(result["steps_rss_mb"], cfg.memcheck.warmup_steps))
    result["max_growth_mb"] = cfg.memcheck.max_growth_mb
    result["flat"] = result["growth_mb"] <= cfg.memcheck.max_growth_mb
    out.write_text(json.dumps(result, indent=1))
    log.info(
        "RSS after warm-up: %.0f MB -> %.0f MB at step %d (growth %+.1f MB, slope %+.2f MB / "
        "1000 steps, max %.0f MB): %s; %s",
        result["rss_start_mb"],
        result["rss_end_mb"],
        cfg.memcheck.steps,
        result["growth_mb"],
        result["slope_mb_per_1000_steps"],
        result["rss_max_mb"],
        "flat" if result["flat"] else "GROWING",
        out,
    )
    return result

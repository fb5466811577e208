"""Training one run of a finding: its config (the finding's overrides scaled by the budget),
seglab's own training in this process, and its speed (``EpochTimer``) and memory."""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from seglab import pipeline
from seglab.benchmark.memory import peak_rss_mb, reset_peak_rss, rss_mb
from seglab.config import model_name

CONF = Path(__file__).resolve().parents[3] / "conf"


class EpochTimer(L.Callback):
    """Times every training step (forward, backward and optimizer step; data loading is
    outside) and writes ``timing.json`` into the run folder (``trainer.default_root_dir``)
    when training ends. ``img_per_s`` leaves the first step out (warm-up) when there are
    more."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, int]] = []
        self._start: float | None = None

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._start is None:
            return
        self._sync()
        self.steps.append((time.perf_counter() - self._start, int(batch["image"].shape[0])))
        self._start = None

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        timed = self.steps[1:] if len(self.steps) > 1 else self.steps
        seconds = sum(t for t, _ in timed)
        out = {
            "steps": len(self.steps),
            "images": sum(n for _, n in self.steps),
            "train_seconds": sum(t for t, _ in self.steps),
            "img_per_s": sum(n for _, n in timed) / seconds if seconds > 0 else None,
            "step_seconds": [round(t, 4) for t, _ in self.steps],
        }
        path = Path(trainer.default_root_dir) / "timing.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """src/train.py's config with these overrides, as @hydra.main would compose it (inside
    a running Hydra app, e.g. src/reproduce.py, with its search path; else from conf/)."""
    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def quote(value: Any) -> str:
    """A value as a Hydra override string would quote it (paths with any characters)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def budget_plan(spec: DictConfig, budget: float) -> dict[str, Any]:
    """Epochs, validation interval, training batches per epoch and validation images of a
    finding at ``budget`` (each scaled and rounded, at least 1; epochs a multiple of the
    validation interval, so that the last epoch is validated)."""
    epochs = max(1, round(spec.epochs * budget))
    points = spec.get("val_points") or epochs
    val_every = max(1, epochs // points)
    epochs = val_every * math.ceil(epochs / val_every)

    def scaled(n: int | None) -> int | None:
        return None if n is None else max(1, round(n * budget))

    return {
        "epochs": epochs,
        "val_every": val_every,
        "train_batches": scaled(spec.get("train_batches")),
        "val_images": scaled(spec.get("val_images")),
    }


def plan_overrides(plan: dict[str, Any]) -> list[str]:
    """The training-config overrides that carry out a ``budget_plan``."""
    out = [
        f"++trainer.max_epochs={plan['epochs']}",
        "++trainer.min_epochs=1",
        f"++trainer.check_val_every_n_epoch={plan['val_every']}",
        f"data.val_subset={'null' if plan['val_images'] is None else plan['val_images']}",
    ]
    if plan["train_batches"] is not None:
        out.append(f"++trainer.limit_train_batches={plan['train_batches']}")
    return out


def train_run(overrides: Sequence[str]) -> dict[str, Any]:
    """Trains one run with seglab's pipeline; returns its metrics, wall time, training
    speed and peak memory (peak RSS of this process during the run minus RSS before it)."""
    cfg = compose_train(overrides)
    out_dir = Path(cfg.paths.output_dir)
    resettable = reset_peak_rss()
    before = rss_mb()
    start = time.perf_counter()
    metrics = pipeline.train(cfg)
    wall = time.perf_counter() - start
    peak = peak_rss_mb() - before if resettable else None
    timing_file = out_dir / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    result = {
        "metrics": metrics,
        "wall_s": wall,
        "peak_mb": peak,
        "rss_before_mb": before,
        "img_per_s": timing.get("img_per_s"),
        "train_images": timing.get("images"),
        "class_names": list(cfg.data.class_names),
        "palette": [list(c) for c in cfg.data.palette],
        "ignore_index": int(cfg.data.ignore_index),
        "model": model_name(cfg),
        "crop_size": int(cfg.data.crop_size),
        "in_channels": int(cfg.data.in_channels),
    }
    del cfg
    gc.collect()
    return result

"""A run's final metrics out: the rich per-class table on the console and ``metrics.json``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table


def _plain(value):
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; an undefined metric is null
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):  # e.g. <stage>/reliability
        return {k: _plain(v) for k, v in value.items()}
    return value


def save_metrics_json(path: str | Path, metrics: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: _plain(v) for k, v in metrics.items()}, indent=2) + "\n")
    return path


def print_metrics_table(metrics: dict[str, float], class_names: Sequence[str], stage: str) -> None:
    """Per-class IoU and accuracy (and Boundary IoU and BF when evaluated), then the summary
    figures and the calibration figures, as a rich table."""
    table = Table(title=f"{stage} metrics")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("Acc", justify="right")
    boundary = f"{stage}/mbiou" in metrics
    if boundary:
        table.add_column("BIoU", justify="right")
        table.add_column("BF", justify="right")

    def fmt(v: float | None) -> str:
        return "-" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"

    def row(label: str, *keys: str) -> None:
        cells = [fmt(metrics.get(k)) if k else "" for k in keys]
        table.add_row(label, *cells[: 4 if boundary else 2])

    for name in class_names:
        row(name, *(f"{stage}/{kind}/{name}" for kind in ("iou", "acc", "biou", "bf")))
    table.add_section()
    means = "mIoU / mAcc / BIoU / BF" if boundary else "mIoU / mAcc"
    row(means, *(f"{stage}/{k}" for k in ("miou", "macc", "mbiou", "mbf")))
    row("aAcc", "", f"{stage}/aacc")
    # The trivial baselines (seglab.metrics.trivial_baselines): what learning nothing scores.
    for name in ("majority", "all_foreground"):
        miou = metrics.get(f"{stage}/baseline/{name}/miou")
        if miou is not None:
            cls = class_names[int(metrics[f"{stage}/baseline/{name}/class"])]
            table.add_row(
                f"baseline: always {cls} (mIoU / aAcc)",
                fmt(miou),
                fmt(metrics.get(f"{stage}/baseline/{name}/aacc")),
                *(["", ""] if boundary else []),
            )
    # Calibration (seglab.calibration): ECE in %, NLL in nats, Brier score (0 to 2).
    for label, key, scale in (("ECE (%)", "ece", 100), ("NLL", "nll", 1), ("Brier", "brier", 1)):
        value = metrics.get(f"{stage}/{key}")
        if value is not None:
            text = "-" if not math.isfinite(value) else f"{scale * value:.4f}"
            table.add_row(label, text, "", *(["", ""] if boundary else []))
    Console().print(table)

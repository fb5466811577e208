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
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def save_metrics_json(path: str | Path, metrics: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: _plain(v) for k, v in metrics.items()}, indent=2) + "\n")
    return path


def print_metrics_table(metrics: dict[str, float], class_names: Sequence[str], stage: str) -> None:
    """Per-class IoU and accuracy, then the summary figures, as a rich table."""
    table = Table(title=f"{stage} metrics")
    table.add_column("class")
    table.add_column("IoU", justify="right")
    table.add_column("Acc", justify="right")

    def fmt(v: float | None) -> str:
        return "-" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"

    for name in class_names:
        table.add_row(
            name, fmt(metrics.get(f"{stage}/iou/{name}")), fmt(metrics.get(f"{stage}/acc/{name}"))
        )
    table.add_section()
    table.add_row(
        "mIoU / mAcc", fmt(metrics.get(f"{stage}/miou")), fmt(metrics.get(f"{stage}/macc"))
    )
    table.add_row("aAcc", "", fmt(metrics.get(f"{stage}/aacc")))
    # The trivial baselines (seglab.metrics.trivial_baselines): what learning nothing scores.
    for name in ("majority", "all_foreground"):
        miou = metrics.get(f"{stage}/baseline/{name}/miou")
        if miou is not None:
            cls = class_names[int(metrics[f"{stage}/baseline/{name}/class"])]
            table.add_row(
                f"baseline: always {cls} (mIoU / aAcc)",
                fmt(miou),
                fmt(metrics.get(f"{stage}/baseline/{name}/aacc")),
            )
    Console().print(table)

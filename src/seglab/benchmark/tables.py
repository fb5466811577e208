"""Benchmark results as tables: one run's on the console (rich), and the README's model
table in markdown over many runs' ``benchmark.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def print_result(r: dict[str, Any]) -> None:
    """One benchmark's figures (a ``benchmark.json`` dict) as a rich table."""
    table = Table(
        title=f"{r['model']}: batch {r['batch_size']} at {r['image_size']}, "
        f"{r['precision']}, {r['device']} ({r['threads']} threads)"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("parameters", f"{r['params'] / 1e6:.2f} M"),
        (f"GFLOPs / image at {r['gflops_size']}x{r['gflops_size']}", f"{r['gflops_per_img']:.1f}"),
        (
            "train img/s: seglab",
            f"{r['train.seglab_img_per_s']:.1f} ±{r['train.seglab_spread']:.0%}",
        ),
        (
            "train img/s: plain loop",
            f"{r['train.plain_img_per_s']:.1f} ±{r['train.plain_spread']:.0%}",
        ),
        (
            "train ratio seglab / plain",
            f"{r['train.ratio']:.3f} (median of {r['train.rounds']} rounds, "
            f"{r['train.ratio_min']:.3f}-{r['train.ratio_max']:.3f})",
        ),
        ("train ms per step seglab adds", f"{r['train.overhead_ms_per_step']:.2f}"),
        (
            "train peak MB: seglab / plain",
            f"{r['train.seglab_peak_mb']:.0f} / {r['train.plain_peak_mb']:.0f}",
        ),
        ("train GFLOP/s achieved", f"{r['train.gflop_per_s']:.1f}"),
        ("inference img/s (eager)", f"{r['infer.img_per_s']:.1f}"),
        (
            "inference img/s (onnxruntime)",
            "-" if r["infer.onnx_img_per_s"] is None else f"{r['infer.onnx_img_per_s']:.1f}",
        ),
        (
            "metric update ms: seglab / torchmetrics",
            f"{r['metric.update_ms']:.2f} / {r['metric.torchmetrics_update_ms']:.2f}",
        ),
        (
            "evaluation extras ms / batch: calibration, boundary",
            f"{r['metric.calibration_ms']:.2f}, {r['metric.boundary_ms']:.2f}",
        ),
        (
            "data loading img/s",
            f"{r['loader.img_per_s']:.0f} ({r['loader.ratio_to_train']:.1f}x training)",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def markdown_table(root: str | Path) -> str:
    """The README's model table from the ``benchmark.json`` files under ``root``."""
    rows = [
        "| model | params (M) | GFLOPs @512 | train img/s | plain img/s | ratio (rounds) | "
        "ms added / step | infer img/s | peak MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for path in sorted(Path(root).glob("*/benchmark.json")):
        r = json.loads(path.read_text())
        rows.append(
            f"| {path.parent.name} | {r['params'] / 1e6:.2f} | {r['gflops_per_img']:.1f} "
            f"| {r['train.seglab_img_per_s']:.2f} | {r['train.plain_img_per_s']:.2f} "
            f"| {r['train.ratio']:.2f} ({r['train.ratio_min']:.2f}-{r['train.ratio_max']:.2f}) "
            f"| {r['train.overhead_ms_per_step']:.1f} | {r['infer.img_per_s']:.2f} "
            f"| {r['train.seglab_peak_mb']:.0f} |"
        )
    return "\n".join(rows)

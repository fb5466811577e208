"""A finding's figures: the learning curves (read from the runs' CSV logs) and the grid of
validation images, ground truth and each run's prediction."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seglab.plotting import pyplot, save_figure
from seglab.visualize import colorize


def read_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    """Per trained epoch (1-based): mean train loss and val mIoU, from the CSV log (the
    evaluation of the best checkpoint after training is left out)."""
    path = run_dir / "csv" / "metrics.csv"
    loss: dict[int, float] = {}
    miou: dict[int, float] = {}
    if not path.is_file():
        return {"loss": loss, "miou": miou}
    with path.open() as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            e = int(float(row["epoch"])) + 1
            if row.get("train/loss_epoch"):
                loss[e] = float(row["train/loss_epoch"])
            if row.get("val/miou") and e not in miou:
                miou[e] = float(row["val/miou"])
    return {"loss": loss, "miou": {e: v for e, v in miou.items() if e in loss}}


def curves_figure(curves: dict[str, dict[str, dict[int, float]]], title: str, path: Path) -> None:
    """Val mIoU and mean train loss per epoch, one line per run (``curves``: label ->
    ``read_curves``), saved as a PNG at ``path``."""
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, c in curves.items():
        if c["miou"]:
            ax1.plot(list(c["miou"]), list(c["miou"].values()), marker="o", label=label)
        if c["loss"]:
            ax2.plot(list(c["loss"]), list(c["loss"].values()), marker=".", label=label)
    ax1.set(xlabel="epoch", ylabel="val mIoU", title="validation mIoU")
    ax2.set(xlabel="epoch", ylabel="train loss (epoch mean)", title="training loss")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(plt, fig, path)


def grid_figure(
    columns: dict[str, list[tuple] | None],
    palette: Sequence[Sequence[int]],
    ignore_index: int,
    path: Path,
) -> None:
    """Rows: validation images; columns: image, ground truth, each run's prediction (the
    image and ground truth from the first run that has them; ignored pixels white)."""
    plt = pyplot()
    base = next((rows for rows in columns.values() if rows), [])
    n_rows, n_cols = max(1, len(base)), 2 + len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.4 * n_cols, 2.0 * n_rows), squeeze=False)
    titles = ["image", "ground truth", *columns]
    for r in range(n_rows):
        panels: list[np.ndarray | None] = [None, None]
        if r < len(base):
            panels = [base[r][0], colorize(base[r][1], palette, ignore_index)]
        for rows in columns.values():
            ok = rows and r < len(rows)
            panels.append(colorize(rows[r][2], palette, ignore_index) if ok else None)
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                ax.text(0.5, 0.5, "no prediction", ha="center", va="center", fontsize=7)
            else:
                ax.imshow(panel, interpolation="nearest")
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
    save_figure(plt, fig, path)

"""Matplotlib for seglab's figures (reports, results, comparisons, reliability diagrams):
pyplot on the file-only Agg backend, imported when a figure is drawn, not at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """pyplot on the Agg backend (no display needed); matplotlib loads on first use."""
    import matplotlib  # here: optional for everything but drawing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt: Any, fig: Any, path: Path) -> None:
    """Writes ``fig`` as a PNG at ``path`` (its folder made) and frees it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""The time-to-accuracy plot of a recipe: val mIoU against wall-clock minutes, one line per
variant, so the speed settings' effect is seen as time saved at equal accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from seglab.plotting import pyplot, save_figure
from seglab.results.plain_loop import PLAIN


def curves_png(
    curves: dict[str, Sequence[Sequence[float]]],
    title: str,
    path: Path,
    target: float | None = None,
) -> bool:
    """Draws ``curves`` (variant -> [[elapsed_s, miou], ...]) into a small PNG at ``path``
    (the target mIoU as a dashed line); False, and no file, when no curve has a point."""
    if not any(curves.values()):
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, points in curves.items():
        if points:
            # The derived plain-loop line is dashed: it may lie on the measured one.
            style = "--" if label == PLAIN else "-"
            xs, ys = [p[0] / 60 for p in points], [p[1] for p in points]
            ax.plot(xs, ys, linestyle=style, marker=".", label=label)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
    ax.set(xlabel="wall-clock minutes", ylabel="val mIoU", title=title, ylim=(0, 1))
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(plt, fig, path)
    return True

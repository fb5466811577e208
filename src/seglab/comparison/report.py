"""The comparison's outputs: ``comparison.md`` (the table, then per-class differences),
``comparison.json`` (the same numbers), ``comparison.png`` (the differences with their
intervals) and the table on the console. The verdict words and their rule are the
reproduction report's (``seglab.reproduce.verdicts``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from seglab.plotting import pyplot, save_figure
from seglab.reproduce.markdown import command_line
from seglab.reproduce.verdicts import fmt, fmt_interval, interval_rule

HEADER = ("run / configuration", "seeds", "images", "mIoU", "aAcc", "ΔmIoU", "ΔaAcc", "verdict")


def _figure(d: dict[str, Any]) -> str:
    """A configuration's figure: value [interval], with ± std over seeds when it has several."""
    if d.get("value") is None:
        return "-"
    std = f" ± {fmt(d['std'])}" if d.get("std") is not None else ""
    return f"{fmt(d['value'])}{std} [{fmt(d.get('low'))}, {fmt(d.get('high'))}]"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """The main table's cells, one row per configuration (the reference first)."""
    rows = []
    for c in result["configurations"]:
        delta = c.get("delta")
        rows.append(
            [
                c["label"],
                str(len(c["runs"])),
                str(c["images"]),
                _figure(c["miou"]),
                _figure(c["aacc"]),
                fmt_interval(delta["miou"]) if delta else "reference",
                fmt_interval(delta["aacc"]) if delta else "reference",
                (c["verdict"] or "-") if delta else "reference",
            ]
        )
    return rows


def _md_table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> list[str]:
    esc = [[cell.replace("|", "\\|") for cell in row] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    return lines + ["| " + " | ".join(row) + " |" for row in esc]


def _per_class(result: dict[str, Any]) -> list[str]:
    ref = result["configurations"][0]
    lines = []
    for c in result["configurations"][1:]:
        rows = [
            [
                n,
                fmt(ref["iou"][n]["value"]),
                fmt(c["iou"][n]["value"]),
                fmt_interval(c["delta"]["iou"][n]),
                c["delta"]["iou"][n]["verdict"] or "-",
            ]
            for n in result["class_names"]
        ]
        header = ["class", "IoU (reference)", "IoU", "ΔIoU [interval]", "verdict"]
        lines += ["", f"### {c['label']} vs {ref['label']}: per-class IoU", ""]
        lines += _md_table(header, rows)
    return lines


def markdown(result: dict[str, Any]) -> str:
    pct = f"{100 * result['confidence']:g}%"
    lines = [
        "# Comparison of runs",
        "",
        f"Command: `{command_line('compare.py')}`  ",
        f"Split: {result['split']}, {result['images']} images; reference: {result['reference']}  ",
        f"Paired bootstrap over images: {result['resamples']} resamples, seed "
        f"{result['seed']}, {pct} percentile intervals; configurations with several seeds: "
        "mean ± standard deviation over seeds, seeds resampled too.",
        "",
        *_md_table(HEADER, table_rows(result)),
        "",
        f"Figures: value [{pct} interval]; Δ: this configuration minus the reference, on the "
        f"same images. Verdicts (on ΔmIoU): {interval_rule(result['confidence'])}",
    ]
    if len(result["configurations"]) > 1:
        lines += _per_class(result)
    lines += ["", "![differences with their intervals](comparison.png)", ""]
    return "\n".join(lines)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, float | np.floating) and not math.isfinite(float(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def _bars(ax: Any, labels: list[str], items: list[dict[str, Any]], title: str) -> None:
    """Horizontal points with interval bars, one per label, and the line at 0."""
    y = np.arange(len(labels))[::-1]
    for yi, d in zip(y, items, strict=True):
        if d.get("value") is None:
            continue
        v, lo, hi = d["value"], d.get("low"), d.get("high")
        lo, hi = v if lo is None else lo, v if hi is None else hi
        # The point can lie outside a percentile interval: no negative bar lengths.
        ax.errorbar(v, yi, xerr=[[max(0.0, v - lo)], [max(0.0, hi - v)]], fmt="o", capsize=4)
    ax.axvline(0.0, color="grey", lw=1, ls="--")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="x")


def figure(result: dict[str, Any], path: Path) -> None:
    """Left: ΔmIoU of each configuration vs the reference with its interval; right: the
    per-class ΔIoU, one group of bars per class (each configuration's mIoU and per-class
    IoU instead when there is only one configuration)."""
    plt = pyplot()
    configs = result["configurations"]
    others = configs[1:] or configs
    names = result["class_names"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 1.6 + 0.5 * max(len(names), len(others))))
    short = [c["label"] if len(c["label"]) <= 40 else c["label"][:37] + "..." for c in others]
    key, name = ("delta", "Δ") if configs[1:] else (None, "")
    pct = f"{100 * result['confidence']:g}%"
    _bars(ax1, short, [c[key]["miou"] if key else c["miou"] for c in others], f"{name}mIoU, {pct}")
    height = 0.8 / len(others)
    y = np.arange(len(names))[::-1]
    for k, (label, c) in enumerate(zip(short, others, strict=True)):
        per = c[key]["iou"] if key else c["iou"]
        vals = np.array([np.nan if per[n]["value"] is None else per[n]["value"] for n in names])
        lo = np.array([np.nan if per[n]["low"] is None else per[n]["low"] for n in names])
        hi = np.array([np.nan if per[n]["high"] is None else per[n]["high"] for n in names])
        err = np.nan_to_num(np.maximum(0.0, [vals - lo, hi - vals]))
        offset = y + 0.4 - height * (k + 0.5)
        ax2.barh(offset, np.nan_to_num(vals), height, label=label, alpha=0.8)
        ax2.errorbar(np.nan_to_num(vals), offset, xerr=err, fmt="none", ecolor="k", capsize=2)
    ax2.axvline(0.0, color="grey", lw=1, ls="--")
    ax2.set_yticks(y, names, fontsize=8)
    ax2.set_title(f"per-class {name}IoU, {pct}", fontsize=9)
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3, axis="x")
    fig.suptitle(f"vs {result['reference']} on {result['split']}" if key else "", fontsize=9)
    save_figure(plt, fig, path)


def write_report(result: dict[str, Any], out: Path) -> Path:
    """Writes comparison.md, comparison.json and comparison.png into ``out``; returns the
    path of comparison.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(_plain(result), indent=2) + "\n")
    figure(result, out / "comparison.png")
    path = out / "comparison.md"
    path.write_text(markdown(result))
    return path


def print_table(result: dict[str, Any]) -> None:
    pct = f"{100 * result['confidence']:g}%"
    table = Table(
        title=f"{result['split']}: {result['images']} images, {pct} intervals, "
        f"{result['resamples']} resamples"
    )
    for i, h in enumerate(HEADER):
        table.add_column(h, justify="left" if i == 0 else "right")
    for row in table_rows(result):
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # a log or a pipe: no terminal width to fit, keep rows whole
        console = Console(width=180)
    console.print(table)

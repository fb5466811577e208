"""Class statistics of a split: ``python src/data_stats.py``.

``class_statistics`` counts the pixels of every class over a split (label maps read with the
dataset's ``load``, in DataLoader workers, ``ignore_index`` not counted) and derives the
median-frequency class weights of Eigen & Fergus (2015), as SegNet uses them:
``w_c = median(freq) / freq_c``, where ``freq_c`` is the pixels of class c divided by the
(labelled) pixels of the images in which c is present, and the median runs over the classes
present. A class never present gets weight 0 (and a warning).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset, Subset

from seglab.config import build, print_config_tree
from seglab.data.datamodule import worker_init
from seglab.data.subsets import choose_indices, unwrap
from seglab.errors import InputError


def _keep(batch: list[Any]) -> list[Any]:
    """Collate that keeps the samples as they are (numpy arrays, tuples)."""
    return batch


class _Counts(Dataset):
    """Per-image class pixel counts and image size, computed where the label map is read
    (in the DataLoader's workers), so only a few numbers cross processes."""

    def __init__(
        self, dataset: Dataset, indices: Sequence[int], num_classes: int, ignore_index: int
    ) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, np.ndarray, tuple[int, int]]:
        index = self.indices[k]
        image, label = self.dataset.load(index)
        label = np.asarray(label)
        values = label[label != self.ignore_index].ravel()
        if values.size and (values.min() < 0 or values.max() >= self.num_classes):
            bad = sorted(set(values[(values < 0) | (values >= self.num_classes)].tolist()))
            raise InputError(
                f"sample {index}: label values {bad[:10]} are neither a class id "
                f"(0..{self.num_classes - 1}) nor ignore_index={self.ignore_index}"
            )
        counts = np.bincount(values.astype(np.int64), minlength=self.num_classes)
        return index, counts, (int(image.shape[0]), int(image.shape[1]))


def median_frequency_weights(
    pixel_counts: Sequence[int] | np.ndarray,
    present_pixels: Sequence[int] | np.ndarray,
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Median-frequency balancing (Eigen & Fergus 2015; SegNet): ``freq_c = pixel_counts[c] /
    present_pixels[c]`` (the labelled pixels of the images in which c is present), and
    ``w_c = median(freq) / freq_c`` with the median over the classes present. Classes never
    present get weight 0, with a warning."""
    counts = np.asarray(pixel_counts, np.float64)
    totals = np.asarray(present_pixels, np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    if not present.any():
        raise InputError("no labelled pixel at all: cannot compute class weights")
    freq = counts[present] / totals[present]
    weights[present] = np.median(freq) / freq
    if not present.all():
        absent = np.flatnonzero(~present).tolist()
        named = [class_names[c] for c in absent] if class_names is not None else absent
        warnings.warn(
            f"classes never present: {named}; weight 0 (their pixels, if any, would not "
            "count in the loss)",
            stacklevel=2,
        )
    return weights


def _round(x: float, digits: int = 5) -> float:
    """``digits`` significant digits: short enough to paste, precise for small weights."""
    return float(f"{x:.{digits}g}")


def class_statistics(
    dataset: Dataset,
    num_classes: int,
    ignore_index: int = 255,
    *,
    class_names: Sequence[str] | None = None,
    num_workers: int = 0,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Pixel counts per class over ``dataset`` (any seglab dataset or a ``Subset`` of one),
    read through ``load`` in a DataLoader with ``num_workers`` workers. Returns plain lists:

    - ``pixel_counts``: pixels of each class (``ignore_index`` not counted);
    - ``frequency``: each class's share of all counted pixels;
    - ``images_with_class``: images in which the class has at least one pixel;
    - ``present_frequency``: pixels of the class / counted pixels of those images (the
      ``freq_c`` of median-frequency balancing);
    - ``class_weights``: the median-frequency weights (5 significant digits);
    - ``num_images``, ``ignored_pixels``, ``image_sizes`` ([height, width, count], most
      frequent first).
    """
    base, indices = unwrap(dataset)
    loader = DataLoader(
        _Counts(base, indices, num_classes, ignore_index),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_keep,
        worker_init_fn=worker_init,
        multiprocessing_context="fork" if num_workers and os.name == "posix" else None,
    )
    counts = np.zeros(num_classes, np.int64)
    present_pixels = np.zeros(num_classes, np.int64)
    images_with = np.zeros(num_classes, np.int64)
    sizes: Counter[tuple[int, int]] = Counter()
    all_pixels = 0
    for batch in loader:
        for _, c, (h, w) in batch:
            counts += c
            present = c > 0
            present_pixels[present] += c.sum()
            images_with += present
            sizes[(h, w)] += 1
            all_pixels += h * w
    total = int(counts.sum())
    weights = median_frequency_weights(counts, present_pixels, class_names)
    with np.errstate(invalid="ignore", divide="ignore"):
        present_freq = np.where(present_pixels > 0, counts / np.maximum(present_pixels, 1), 0.0)
    return {
        "num_images": len(indices),
        "num_classes": num_classes,
        "class_names": list(class_names) if class_names is not None else None,
        "ignore_index": ignore_index,
        "counted_pixels": total,
        "ignored_pixels": all_pixels - total,
        "pixel_counts": counts.tolist(),
        "frequency": (counts / max(total, 1)).tolist(),
        "images_with_class": images_with.tolist(),
        "present_frequency": present_freq.tolist(),
        "class_weights": [_round(w) for w in weights],
        "image_sizes": [[h, w, n] for (h, w), n in sizes.most_common()],
    }


def _pyplot():  # matplotlib: an optional extra, only the plots need it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def frequency_plot(
    stats: dict[str, Any], palette: Sequence[Sequence[int]], path: str | Path
) -> Path:
    """Bar chart of the class frequencies, bars in the classes' palette colours."""
    plt = _pyplot()
    names = stats["class_names"] or [str(c) for c in range(stats["num_classes"])]
    n = len(names)
    fig, ax = plt.subplots(figsize=(min(4 + 0.4 * n, 30), 4.5))
    colours = [tuple(v / 255 for v in palette[c]) for c in range(n)]
    ax.bar(range(n), stats["frequency"], color=colours, edgecolor="black", linewidth=0.5)
    ax.set_xticks(range(n), names, rotation=90 if n > 6 else 0)
    ax.set_ylabel("share of labelled pixels")
    ax.set_title(f"class frequencies ({stats['num_images']} images)")
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    """Writes a figure as a PNG and frees it (pyplot keeps every open figure otherwise)."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def size_plot(stats: dict[str, Any], path: str | Path, max_bars: int = 25) -> Path:
    """Image sizes: one bar per size (height x width) when there are at most ``max_bars``
    distinct sizes, else histograms of heights and widths."""
    plt = _pyplot()
    sizes = stats["image_sizes"]
    if len(sizes) <= max_bars:
        fig, ax = plt.subplots(figsize=(min(4 + 0.4 * len(sizes), 16), 4.5))
        ax.bar(range(len(sizes)), [n for _, _, n in sizes], color="tab:blue")
        ax.set_xticks(range(len(sizes)), [f"{h}x{w}" for h, w, _ in sizes], rotation=90)
        ax.set_xlabel("height x width")
        ax.set_ylabel("images")
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
        for ax, k, label in ((axes[0], 0, "height"), (axes[1], 1, "width")):
            ax.hist([s[k] for s in sizes], weights=[s[2] for s in sizes], bins=30)
            ax.set_xlabel(label)
            ax.set_ylabel("images")
    fig.suptitle(f"image sizes ({stats['num_images']} images)")
    return _save(plt, fig, path)


def weights_line(weights: Sequence[float]) -> str:
    """The weights as an override (and YAML flow list): ``data.class_weights=[a,b,...]``."""
    return "data.class_weights=[" + ",".join(f"{w:g}" for w in weights) + "]"


def run_stats(cfg: DictConfig) -> dict[str, Any]:
    """``python src/data_stats.py``: counts ``stats.split`` and writes ``data_stats.json``,
    ``class_frequencies.png`` and ``image_sizes.png`` into the run folder."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    relevant = OmegaConf.masked_copy(cfg, ["seed", "data", "stats", "paths"])  # what it reads
    print_config_tree(relevant, out_dir / "config_tree.log")
    data, opts = cfg.data, cfg.stats
    dm = build(data)
    # The whole split (a val_subset only shortens evaluation), or a fixed random part of it.
    base, _ = unwrap(dm.dataset(opts.split))
    indices = list(range(len(base)))
    chosen = [
        indices[k] for k in choose_indices(len(indices), opts.max_images, cfg.get("seed"), True)
    ]
    stats = class_statistics(
        Subset(base, chosen),
        data.num_classes,
        data.ignore_index,
        class_names=list(data.class_names),
        num_workers=data.num_workers,
        batch_size=opts.batch_size,
    )
    stats = {"data": data.name, "split": opts.split, **stats}
    (out_dir / "data_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    frequency_plot(stats, data.palette, out_dir / "class_frequencies.png")
    size_plot(stats, out_dir / "image_sizes.png")

    table = Table(title=f"{data.name} {opts.split}: {stats['num_images']} images")
    for col in ("id", "class", "pixels", "frequency", "images", "freq (present)", "weight"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for c, name in enumerate(data.class_names):
        table.add_row(
            str(c),
            str(name),
            f"{stats['pixel_counts'][c]:,}",
            f"{stats['frequency'][c]:.4f}",
            str(stats["images_with_class"][c]),
            f"{stats['present_frequency'][c]:.4f}",
            f"{stats['class_weights'][c]:g}",
        )
    console = Console()
    console.print(table)
    sizes = ", ".join(f"{h}x{w}: {n}" for h, w, n in stats["image_sizes"][:5])
    more = len(stats["image_sizes"]) - 5
    console.print(f"image sizes: {sizes}" + (f" (+{more} more)" if more > 0 else ""))
    console.print(
        f"ignored pixels: {stats['ignored_pixels']:,}; written to {out_dir}", markup=False
    )
    print(weights_line(stats["class_weights"]), flush=True)  # plain print: no rich wrapping
    return stats

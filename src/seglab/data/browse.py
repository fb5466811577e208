"""Looking at a split: ``python src/browse.py`` tiles image / mask-overlay pairs, raw or
through the training augmentations."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from rich.console import Console
from torch.utils.data import Dataset, Subset

from seglab.config import build, print_config_tree
from seglab.data.subsets import choose_indices, unwrap
from seglab.visualize import denormalize, grid, overlay


def browse_grid(
    dataset: Dataset,
    palette: Sequence[Sequence[int]],
    ignore_index: int = 255,
    *,
    num: int | None = 16,
    seed: int | None = 0,
    shuffle: bool = True,
    transform: Any = None,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    cols: int = 4,
    alpha: float = 0.5,
) -> tuple[np.ndarray, list[int]]:
    """A grid of (image, mask overlay) pairs, ``cols`` pairs a row, for ``num`` samples of
    ``dataset`` (a fixed random choice by ``seed``, or the first ones). With ``transform``
    (an albumentations pipeline ending in Normalize and ToTensorV2, like the DataModule's)
    the samples go through it, seeded per sample, and are denormalised with ``mean``/``std``.
    Ignored pixels show the image alone. Returns the RGB grid and the dataset indices shown."""
    base, indices = unwrap(dataset)
    chosen = [indices[k] for k in choose_indices(len(indices), num, seed, shuffle)]
    pairs = []
    for index in chosen:
        image, mask = base.load(index)
        if transform is not None:
            sample_seed = (0 if seed is None else seed) * 1_000_003 + index
            transform.set_random_seed(sample_seed)
            random.seed(sample_seed)
            out = transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
            image = denormalize(image, mean, std) if hasattr(image, "detach") else image
            mask = mask.numpy() if hasattr(mask, "numpy") else np.asarray(mask)
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        mask = np.asarray(mask)
        pairs += [image, overlay(image, mask, palette, alpha=alpha, ignore_index=ignore_index)]
    per_row = 2 * max(1, cols)
    rows = [pairs[i : i + per_row] for i in range(0, len(pairs), per_row)]
    return grid(rows), chosen


def run_browse(cfg: DictConfig) -> Path:
    """``python src/browse.py``: writes ``browse_<split>.png`` into the run folder."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # What it reads of the (training) config.
    keys = ["seed", "data", "split", "num", "shuffle", "augment", "cols", "alpha", "paths"]
    print_config_tree(OmegaConf.masked_copy(cfg, keys), out_dir / "config_tree.log")
    data = cfg.data
    dm = build(data)
    base, _ = unwrap(dm.dataset(cfg.split))  # the whole split, not the val subset
    indices = list(range(len(base)))
    canvas, shown = browse_grid(
        Subset(base, indices),
        data.palette,
        data.ignore_index,
        num=cfg.num,
        seed=cfg.get("seed"),
        shuffle=cfg.shuffle,
        transform=dm.transforms["train"] if cfg.augment else None,
        mean=data.mean,
        std=data.std,
        cols=cfg.cols,
        alpha=cfg.alpha,
    )
    suffix = "_augmented" if cfg.augment else ""
    path = out_dir / f"browse_{cfg.split}{suffix}.png"
    Image.fromarray(canvas).save(path)
    rows = math.ceil(len(shown) / max(1, cfg.cols))
    Console().print(
        f"{data.name} {cfg.split}: {len(shown)} of {len(indices)} samples "
        f"(indices {shown[:16]}{' ...' if len(shown) > 16 else ''}), {rows} rows, "
        f"{canvas.shape[1]}x{canvas.shape[0]} px -> {path}",
        markup=False,
    )
    return path

"""One confusion matrix per evaluated image, and the ``per_image_<stage>.npz`` file.

The dataset-level confusion matrix says how good a model is; the per-image ones say how sure
that figure is: ``src/compare.py`` resamples images from them (paired bootstrap). Summed
over images they give exactly the evaluation's matrix.

File format (``np.savez_compressed``): ``confmat`` int64 (N, C, C), rows = label class,
columns = predicted class, one matrix per image, sorted by ``index``; ``index`` int64 (N,),
the image's index in the split's dataset; ``class_names`` str (C,).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from seglab.errors import MissingFileError


def per_image_confmats(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """``confmat[n, label, prediction]`` pixel counts (N, C, C) of class maps ``preds`` and
    ``target`` (N, H, W); ignored and out-of-range label pixels do not count. One bincount,
    no host synchronisation."""
    n, c = preds.shape[0], num_classes
    preds = preds.reshape(n, -1).long()
    target = target.reshape(n, -1).long()
    valid = (target >= 0) & (target < c)
    if ignore_index is not None:
        valid &= target != ignore_index
    image = torch.arange(n, device=preds.device)[:, None] * (c * c)
    index = torch.where(valid, image + target * c + preds, torch.full_like(target, n * c * c))
    counts = torch.bincount(index.reshape(-1), minlength=n * c * c + 1)[: n * c * c]
    return counts.reshape(n, c, c)


class PerImageConfusion:
    """Collects each image's confusion matrix with its dataset index during an evaluation;
    ``gather`` joins those of every DDP process (each image is evaluated by exactly one,
    ``UnpaddedDistributedSampler``), sorted by index."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confmats: list[torch.Tensor] = []
        self.indices: list[torch.Tensor] = []

    def update(self, preds: torch.Tensor, target: torch.Tensor, index: torch.Tensor) -> None:
        self.confmats.append(
            per_image_confmats(preds, target, self.num_classes, self.ignore_index).int()
        )
        self.indices.append(torch.as_tensor(index).reshape(-1).long())

    def reset(self) -> None:
        self.confmats, self.indices = [], []

    def gather(self) -> tuple[np.ndarray, np.ndarray]:
        """``(confmat (N, C, C) int64, index (N,) int64)`` of all processes, sorted by index
        (a collective under DDP: every process calls it)."""
        c = self.num_classes
        mine = (
            torch.cat(self.confmats).cpu().numpy().astype(np.int64)
            if self.confmats
            else np.zeros((0, c, c), dtype=np.int64)
        )
        index = (
            torch.cat(self.indices).cpu().numpy().astype(np.int64)
            if self.indices
            else np.zeros(0, dtype=np.int64)
        )
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (mine, index))
            mine = np.concatenate([p[0] for p in parts])
            index = np.concatenate([p[1] for p in parts])
        order = np.argsort(index, kind="stable")
        return mine[order], index[order]


def save_per_image(
    path: str | Path, confmat: np.ndarray, index: np.ndarray, class_names: Sequence[str]
) -> Path:
    """Writes ``per_image_<stage>.npz`` (format: the module docstring), sorted by index."""
    path = Path(path)
    confmat, index = np.asarray(confmat, dtype=np.int64), np.asarray(index, dtype=np.int64)
    if confmat.ndim != 3 or confmat.shape[1:] != (len(class_names),) * 2:
        raise ValueError(
            f"confmat of shape {confmat.shape} does not fit {len(class_names)} classes"
        )
    if index.shape != (confmat.shape[0],):
        raise ValueError(f"{index.shape[0]} indices for {confmat.shape[0]} matrices")
    order = np.argsort(index, kind="stable")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        confmat=confmat[order],
        index=index[order],
        class_names=np.asarray(list(class_names), dtype=str),
    )
    return path


def load_per_image(path: str | Path) -> dict[str, np.ndarray]:
    """``{"confmat", "index", "class_names"}`` of a ``per_image_<stage>.npz`` (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"{path} does not exist: a run writes per_image_<stage>.npz when it is evaluated "
            "with evaluation.per_image=true (the default); evaluate it again with "
            "python src/eval.py ckpt_path=<its checkpoint>"
        )
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in ("confmat", "index", "class_names")}

"""What every prediction shares (semantic and instance, checkpoint and ONNX): the images under
``input`` (listed, then read and normalised in DataLoader workers, by the datasets' rules), the
checkpoint's module on the device with the precision to run it in, where each image's outputs
go, and the report of the files that could not be read."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from seglab.data.datamodule import worker_init
from seglab.data.readers import read_image
from seglab.task_module import TaskModule

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def list_images(path: Path) -> list[Path]:
    """``path`` itself if it is a file, else every image under the folder, sorted."""
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    raise FileNotFoundError(f"input {path} does not exist; pass input=<image or folder>")


class ImageFiles(torch.utils.data.Dataset):
    """Reads and normalises one image per item (in DataLoader workers); an unreadable file
    gives its error instead, so that one bad file does not stop the others."""

    def __init__(self, paths: list[Path], grey: bool, mean: Sequence, std: Sequence) -> None:
        self.paths, self.grey = paths, grey
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, Any]:
        try:
            image = read_image(self.paths[i], 1 if self.grey else 3)
        except Exception as err:  # reported by predict, after the others
            return i, None, err
        x = torch.from_numpy(((image / 255.0 - self.mean) / self.std).astype(np.float32))
        return i, image, x.permute(2, 0, 1)


def _as_is(item: Any) -> Any:
    return item


def image_loader(
    paths: list[Path], data: dict[str, Any], num_workers: int
) -> torch.utils.data.DataLoader:
    """Yields ``(index, image as read, normalised tensor)`` per file, or ``(index, None,
    error)`` for a file that could not be read; ``data``: the run's data facts."""
    return torch.utils.data.DataLoader(
        ImageFiles(paths, data["in_channels"] == 1, data["mean"], data["std"]),
        batch_size=None,
        collate_fn=_as_is,  # keep the numpy image as it is
        num_workers=num_workers,
        worker_init_fn=worker_init if num_workers else None,
    )


def on_device(module: TaskModule, cfg: DictConfig, run: DictConfig) -> tuple[torch.device, str]:
    """Puts ``module`` in eval mode on the GPU if there is one; returns the device and the
    precision to predict in (``cfg.precision``, else the training run's)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device).eval()
    return device, str(cfg.get("precision") or run.trainer.get("precision", "32-true"))


def output_stem(path: Path, in_root: Path, out_root: Path) -> Path:
    """Where ``path``'s outputs go, without a suffix: its place under ``in_root`` (or its
    name, for a single file) under ``out_root``; the folder is created."""
    rel = path.relative_to(in_root).with_suffix("") if in_root.is_dir() else Path(path.stem)
    target = out_root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def log_unreadable(failed: list[tuple[Path, BaseException]], total: int) -> None:
    """Names every file that could not be read, then how many of ``total`` they were."""
    for path, err in failed:
        log.error("could not read %s: %s", path, err)
    if failed:
        log.error("%d of %d files could not be read (listed above)", len(failed), total)

"""The built-in shapes as instance segmentation (``task=instance``): one mask per object,
touching objects of the same class included; generated like ``seglab.data.shapes``, no
download. Targets as ``seglab.data.instance_targets`` describes them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from seglab.data.instance_targets import InstanceDataset, Instances
from seglab.data.shapes import BG_AMP, BG_KINDS, SPLIT_IDS, ShapesDataset, paint, paint_shape


def make_instances(
    seed: int,
    split: str,
    index: int,
    min_size: int,
    max_size: int,
    max_objects: int,
    touching: float = 0.5,
    min_area: int = 16,
) -> tuple[np.ndarray, Instances]:
    """Sample ``index`` of ``split``: the shapes generator's rules (class by outline only,
    random colour and texture, later objects occluding earlier ones), with one mask per
    object. With probability ``touching`` an object gets a neighbour of the same class
    placed against it (two instances of one class that touch). Objects left with fewer than
    ``min_area`` visible pixels are dropped (their pixels stay painted)."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index, 1])
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    image = paint(rng, h, w, BG_AMP, BG_KINDS)
    owner = np.zeros((h, w), np.int32)  # 0: background, k: object k (1-based)
    classes: list[int] = []
    n = int(rng.integers(1, max_objects + 1))
    pending: tuple[int, float, float, float] | None = None
    while len(classes) < n:
        if pending is not None:
            cls, cx, cy, r = pending
            pending = None
        else:
            cls = int(rng.integers(1, len(ShapesDataset.CLASSES)))
            r = rng.uniform(0.12, 0.22) * min_size
            cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
            if len(classes) + 1 < n and rng.uniform() < touching:
                angle = rng.uniform(0, 2 * np.pi)
                pending = (cls, cx + 1.9 * r * np.cos(angle), cy + 1.9 * r * np.sin(angle), r)
        inside = paint_shape(rng, image, cls, cx, cy, r)
        classes.append(cls)
        owner[inside] = len(classes)
    image += rng.normal(0, rng.uniform(0, 10), size=image.shape).astype(np.float32)
    masks = np.stack([owner == k for k in range(1, len(classes) + 1)]).astype(np.uint8)
    area = masks.reshape(len(classes), -1).sum(1)
    keep = area >= min_area
    inst = {
        "masks": masks[keep],
        "labels": np.asarray(classes, np.int64)[keep],
        "iscrowd": np.zeros(int(keep.sum()), bool),
        "area": area[keep].astype(np.float32),
    }
    return image.clip(0, 255).astype(np.uint8), inst


class ShapesInstancesDataset(InstanceDataset, ShapesDataset):
    """Background + ellipse, rectangle, triangle, star, one instance mask per object: the
    shapes dataset's settings and cache (larger images and more objects by default), with
    ``touching`` and ``min_area`` as ``make_instances`` reads them."""

    def __init__(
        self,
        split: str = "train",
        *,
        min_size: Mapping[str, int] | int = 64,
        max_size: Mapping[str, int] | int = 96,
        max_objects: int = 4,
        touching: float = 0.5,
        min_area: int = 16,
        **settings: Any,  # num_samples, seed, cache, transform: as ShapesDataset's
    ) -> None:
        super().__init__(
            split, min_size=min_size, max_size=max_size, max_objects=max_objects, **settings
        )
        self.touching, self.min_area = float(touching), min_area

    def image_id(self, index: int) -> int:
        return int(index) + 1  # COCO ids start at 1

    def generate(self, index: int) -> tuple[np.ndarray, Instances]:
        return make_instances(
            self.seed,
            self.split,
            index,
            self.min_size,
            self.max_size,
            int(self.max_objects),
            self.touching,
            self.min_area,
        )

    def load_instances(self, index: int) -> tuple[np.ndarray, Instances]:
        return self.sample(index)

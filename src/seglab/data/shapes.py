"""The built-in dataset: procedurally generated shapes, no download.

Classes differ by *shape* only. Colour and texture of every object are drawn from the same
distributions whatever its class (random colour; flat, stripes, checkerboard or smooth noise),
objects are randomly rotated, scaled and stretched, overlap and occlude each other, and
images get sensor noise and vary in size. A model can only score well by learning shape.
Sample ``i`` of a split is a pure function of ``(seed, split, i)``, so the dataset is
identical on every machine and in every process, and costs nothing to store.
``seglab.data.shapes_instances`` draws the same shapes as instance segmentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from seglab.data.base import SegmentationDataset
from seglab.errors import InputError

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
# Texture kinds and strengths. The background is flat or smoothly mottled, so that objects
# stand out; objects take any texture. All object classes share one distribution, so
# colour and texture say nothing about the class: only the outline does.
BG_KINDS, BG_AMP = (0, 3), 60.0
OBJ_KINDS, OBJ_AMP = (0, 1, 2, 3), 30.0


def _texture(rng: np.random.Generator, h: int, w: int, kinds: tuple[int, ...]) -> np.ndarray:
    """A texture in [-1, 1]: 0 flat, 1 stripes, 2 checkerboard or 3 smooth noise."""
    kind = kinds[rng.integers(len(kinds))]
    if kind == 0:
        return np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(4, 16)
    u = (xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period)
    if kind == 1:
        return np.sin(u)
    if kind == 2:
        v = (-xx * np.sin(theta) + yy * np.cos(theta)) * (2 * np.pi / period)
        return np.sign(np.sin(u) * np.sin(v)).astype(np.float32)
    cells = rng.uniform(-1, 1, size=(int(rng.integers(3, 9)),) * 2).astype(np.float32)
    return cv2.resize(cells, (w, h), interpolation=cv2.INTER_CUBIC).clip(-1, 1)


def paint(
    rng: np.random.Generator,
    h: int,
    w: int,
    amplitude: float,
    kinds: tuple[int, ...],
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """A random colour field: a base colour (at least some contrast away from ``avoid``)
    plus a texture of random strength up to ``amplitude``."""
    base = rng.uniform(0, 255, size=3).astype(np.float32)
    while avoid is not None and np.abs(base - avoid).sum() < 120:
        base = rng.uniform(0, 255, size=3).astype(np.float32)
    other = rng.uniform(-amplitude, amplitude, size=3).astype(np.float32)
    return base + _texture(rng, h, w, kinds)[..., None] * other


def _polygon(cls: int, rng: np.random.Generator, cx: float, cy: float, r: float) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    if cls == 2:  # rectangle: random aspect
        a = rng.uniform(0.7, 1.0)
        t = np.array([np.pi / 4, 3 * np.pi / 4, 5 * np.pi / 4, 7 * np.pi / 4])
        pts = np.stack([np.cos(t), a * np.sin(t)], 1) * r * 1.2
    elif cls == 3:  # triangle: random apex
        t = np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.2, 0.2, 3)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r * 1.25
    else:  # five-pointed star
        t = np.arange(10) * np.pi / 5
        radius = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        pts = np.stack([np.cos(t), np.sin(t)], 1) * radius[:, None] * r * 1.3
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return (pts @ rot.T + [cx, cy]).round().astype(np.int32)


def paint_shape(
    rng: np.random.Generator, image: np.ndarray, cls: int, cx: float, cy: float, r: float
) -> np.ndarray:
    """Draws an object of class ``cls`` (1 ellipse, 2 rectangle, 3 triangle, 4 star) centred
    at (``cx``, ``cy``) with radius ``r`` into the float ``image``, in a colour and texture
    that stand out from what lies beneath; returns the boolean region it covers."""
    h, w = image.shape[:2]
    region = np.zeros((h, w), np.uint8)
    if cls == 1:  # ellipse
        axes = (int(r), int(r * rng.uniform(0.8, 1.0)))
        cv2.ellipse(region, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    else:
        cv2.fillPoly(region, [_polygon(cls, rng, cx, cy, r)], 1)
    inside = region.astype(bool)
    local = image[inside].mean(axis=0) if inside.any() else None
    image[inside] = paint(rng, h, w, OBJ_AMP, OBJ_KINDS, avoid=local)[inside]
    return inside


def make_sample(
    seed: int, split: str, index: int, min_size: int, max_size: int, max_objects: int
) -> tuple[np.ndarray, np.ndarray]:
    """Generates sample ``index`` of ``split``: (uint8 HxWx3 image, uint8 HxW label map)."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    h, w = (int(v) for v in rng.integers(min_size, max_size + 1, size=2))
    image = paint(rng, h, w, BG_AMP, BG_KINDS)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        cls = int(rng.integers(1, len(ShapesDataset.CLASSES)))
        r = rng.uniform(0.15, 0.3) * min_size  # object scale does not depend on image size
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        mask[paint_shape(rng, image, cls, cx, cy, r)] = cls
    image += rng.normal(0, rng.uniform(0, 10), size=image.shape).astype(np.float32)
    return image.clip(0, 255).astype(np.uint8), mask


def split_settings(
    split: str, num_samples: Any, min_size: Any, max_size: Any
) -> tuple[int, int, int]:
    """This split's sample count and image size range, each given as one value or as a
    {split: value} mapping; checked."""
    if split not in SPLIT_IDS:
        raise InputError(f"shapes: unknown split {split!r}; use one of {list(SPLIT_IDS)}")
    num_samples, min_size, max_size = (
        int(v[split] if isinstance(v, Mapping) else v) for v in (num_samples, min_size, max_size)
    )
    if not 0 < min_size <= max_size:
        raise InputError(f"shapes: need 0 < min_size <= max_size, got {min_size}, {max_size}")
    return num_samples, min_size, max_size


class ShapesDataset(SegmentationDataset):
    """Background + ellipse, rectangle, triangle, star, generated on the fly."""

    CLASSES = ("background", "ellipse", "rectangle", "triangle", "star")

    def __init__(
        self,
        split: str = "train",
        num_samples: Mapping[str, int] | int = 1000,
        seed: int = 0,
        min_size: Mapping[str, int] | int = 48,
        max_size: Mapping[str, int] | int = 64,
        max_objects: int = 3,
        cache: bool = True,
        transform: Any = None,
    ) -> None:
        super().__init__(transform)
        num_samples, min_size, max_size = split_settings(split, num_samples, min_size, max_size)
        self.split, self.num_samples, self.seed = split, int(num_samples), seed
        self.min_size, self.max_size, self.max_objects = min_size, max_size, max_objects
        # Generated samples are kept in memory (about 15 KB each at the default size):
        # epochs after the first cost nothing to produce.
        self._cache: dict[int, tuple[np.ndarray, Any]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_samples

    def generate(self, index: int) -> tuple[np.ndarray, Any]:
        """Sample ``index``, made afresh: (image, label map)."""
        return make_sample(
            self.seed, self.split, index, self.min_size, self.max_size, self.max_objects
        )

    def sample(self, index: int) -> tuple[np.ndarray, Any]:
        """``generate(index)``, made once when ``cache`` is on."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        sample = self.generate(index)
        if self._cache is not None:
            self._cache[index] = sample
        return sample

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.sample(index)

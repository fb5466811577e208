"""Albumentations transforms seglab adds, for the data configs' ``train_transforms``.

``BalancedRandomCrop`` is a random crop that avoids crops one class fills (mmsegmentation's
``cat_max_ratio``): on data where a class such as road or sky covers most of every image, a
plain random crop mostly shows that class and the rare classes are seen less still.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from albumentations.augmentations.crops import functional as fcrops
from albumentations.augmentations.crops.transforms import BaseCrop

from seglab.errors import InputError

# How many crops are drawn at most before the last one is kept regardless.
MAX_TRIES = 10


def dominant_fraction(mask: np.ndarray, ignore_index: int) -> float:
    """The share of the labelled pixels of ``mask`` that its most frequent class covers
    (1.0 when nothing is labelled: such a crop teaches nothing either)."""
    _, counts = np.unique(mask[mask != ignore_index], return_counts=True)
    return float(counts.max() / counts.sum()) if counts.size else 1.0


class BalancedRandomCrop(BaseCrop):
    """A random ``height`` x ``width`` crop, drawn again (up to ``MAX_TRIES`` crops in all)
    while one class covers more than ``cat_max_ratio`` of its labelled pixels; the last crop
    is kept if none passes. ``cat_max_ratio=1.0`` is a plain random crop (the same crops as
    ``albumentations.RandomCrop`` for the same seed). Use it in place of ``RandomCrop``, after
    ``PadIfNeeded``: the image must be at least the crop size.
    """

    def __init__(
        self,
        height: int,
        width: int,
        cat_max_ratio: float = 0.75,
        ignore_index: int = 255,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if height < 1 or width < 1:
            raise InputError(f"BalancedRandomCrop: height={height}, width={width}: must be >= 1")
        if not 0 < cat_max_ratio <= 1:
            raise InputError(
                f"BalancedRandomCrop: cat_max_ratio={cat_max_ratio}: must be in (0, 1]"
            )
        self.height = height
        self.width = width
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    @property
    def targets_as_params(self) -> list[str]:
        """The mask decides which crop is kept, so albumentations must pass it in."""
        return ["mask"] if self.cat_max_ratio < 1 else []

    def _random_crop(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """One crop, drawn as ``RandomCrop`` draws it (same random numbers, same box)."""
        h_start = self.py_random.random()
        w_start = self.py_random.random()
        return fcrops.get_crop_coords(shape, (self.height, self.width), h_start, w_start)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        shape = tuple(params["shape"][:2])
        if self.height > shape[0] or self.width > shape[1]:
            raise InputError(
                f"BalancedRandomCrop: crop {self.height}x{self.width} exceeds the image "
                f"{shape[0]}x{shape[1]}: put albumentations.PadIfNeeded before it"
            )
        coords = self._random_crop(shape)
        if self.cat_max_ratio >= 1:
            return {"crop_coords": coords}
        mask = np.asarray(data["mask"])
        for _ in range(MAX_TRIES - 1):
            x0, y0, x1, y1 = coords
            if dominant_fraction(mask[y0:y1, x0:x1], self.ignore_index) <= self.cat_max_ratio:
                break
            coords = self._random_crop(shape)
        return {"crop_coords": coords}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "cat_max_ratio", "ignore_index")

"""Any dataset laid out as ``images/`` + ``masks/``: users' own data, and the seed projects'.

Two layouts, looked for in this order:

- split folders: ``images/<split>/...`` and ``masks/<split>/...``;
- split lists: ``splits/<split>.txt`` naming images (one per line, by name without suffix,
  relative to ``images/``; a suffix, if written, is dropped), with all images in ``images/``
  and all masks in ``masks/``.

The mask of ``images/<split>/a/b.jpg`` is ``masks/<split>/a/b<mask_suffix>``. An image without
a mask, or (split folders) a mask without an image, stops with the file named; with
``on_bad_sample="skip"`` such files are left out of the split with a warning (and listed in
``dropped``).

``mask_format`` says how a mask stores classes:

- ``binary``: 0 = class 0, and 1 or 255 = class 1 (a mask is either 0/1 or 0/255; palette
  images by their indices);
- ``index``: pixel value = class id (grey or palette PNG: palette images are read by their
  indices, not their colours); ``ignore_index`` is void;
- ``rgb``: colours, class i having colour ``palette[i]`` (the data config's palette), and
  ``void_colours`` void.

Values that do not fit the format are an error naming the file, never a silent class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seglab.data.base import SegmentationDataset
from seglab.data.file_pairs import pair_files, read_split_list
from seglab.data.label_tables import as_colour_table, colours_to_labels, compact, index_lut, lookup
from seglab.data.readers import check_same_size, read_label, read_rgb
from seglab.errors import InputError, MissingFileError

FORMATS = ("binary", "index", "rgb")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class FolderDataset(SegmentationDataset):
    """Images and masks from an ``images/`` + ``masks/`` tree (see the module docstring)."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        mask_format: str = "binary",
        num_classes: int = 2,
        ignore_index: int = 255,
        palette: Sequence[Sequence[int]] | None = None,
        void_colours: Sequence[Sequence[int]] = (),
        image_suffixes: Sequence[str] = IMAGE_SUFFIXES,
        mask_suffix: str = ".png",
        on_bad_sample: str = "error",
        transform=None,
    ) -> None:
        super().__init__(transform)
        if mask_format not in FORMATS:
            raise InputError(f"data.dataset.mask_format={mask_format!r}; use one of {FORMATS}")
        if mask_format == "binary" and num_classes != 2:
            raise InputError(f"folder: binary masks make 2 classes, not num_classes={num_classes}")
        self.root, self.split, self.mask_format = Path(root).expanduser(), split, mask_format
        self.num_classes, self.ignore_index = num_classes, ignore_index
        if mask_format == "rgb":
            if palette is None or len(palette) != num_classes:
                raise InputError(
                    "data.dataset.mask_format=rgb needs one data.palette colour per class"
                )
            self.table = as_colour_table(palette)
            for c in void_colours:
                colour = tuple(int(v) for v in c)
                if colour in self.table:
                    raise InputError(f"folder: void colour {colour} is also a class colour")
                self.table[colour] = ignore_index  # type: ignore[index]
        self.lut = index_lut(num_classes, ignore_index)
        # (file, problem) of the files left out (on_bad_sample=skip: unpaired images / masks).
        self.dropped: list[tuple[str, str]] = []
        self._unpaired = self.dropped if on_bad_sample == "skip" else None
        self.samples = self._find(list(image_suffixes), mask_suffix)

    def _find(self, image_suffixes: list[str], mask_suffix: str) -> list[tuple[Path, Path]]:
        images, masks = self.root / "images", self.root / "masks"
        if (images / self.split).is_dir():
            return pair_files(
                images / self.split,
                masks / self.split,
                image_suffixes,
                mask_suffix,
                dropped=self._unpaired,
            )
        split_list = self.root / "splits" / f"{self.split}.txt"
        if split_list.is_file():
            keys = []
            for name in read_split_list(split_list):
                low = name.lower()
                suffix = next((s for s in image_suffixes if low.endswith(s.lower())), "")
                keys.append(name[: len(name) - len(suffix)] if suffix else name)
            if not keys:
                raise InputError(f"folder: {split_list} lists no images: an empty split")
            return pair_files(
                images, masks, image_suffixes, mask_suffix, keys=keys, dropped=self._unpaired
            )
        if not self.root.is_dir():
            raise MissingFileError(
                f"folder: data.root {self.root} does not exist; set data.root=<the folder "
                "holding images/ and masks/>"
            )
        raise MissingFileError(
            f"folder: no {self.split} split in {self.root}: expected images/{self.split}/ (and "
            f"masks/{self.split}/) or splits/{self.split}.txt"
        )

    def __len__(self) -> int:
        return len(self.samples)

    def decode(self, mask: np.ndarray, mode: str, path: Path) -> np.ndarray:
        """Class ids (H, W) from a mask as stored (see ``mask_format``)."""
        if self.mask_format == "rgb":
            if mask.ndim == 2:  # grey or palette: compare colours
                mask = read_rgb(path)
            return colours_to_labels(mask, self.table, path)
        if mask.ndim == 3:  # colour image holding grey values
            if not (mask == mask[..., :1]).all():
                raise InputError(
                    f"{path}: a colour ({mode}) mask, but data.dataset.mask_format={self.mask_format}; "
                    "set data.dataset.mask_format=rgb with the colours as data.palette"
                )
            mask = mask[..., 0]
        if self.mask_format == "binary":
            values = set(np.unique(mask).tolist())
            if values <= {0, 1}:
                return mask.astype(np.int64)
            if values <= {0, 255}:
                return (mask == 255).astype(np.int64)
            raise InputError(
                f"{path}: a binary mask must hold 0/1 or 0/255 only, found {sorted(values)[:10]}"
                " (for class indices set data.dataset.mask_format=index)"
            )
        return lookup(mask, self.lut, path, what="class index")

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.samples[index]
        image = read_rgb(image_path)
        mask, mode = read_label(mask_path)
        check_same_size(image, mask, image_path, mask_path)
        return image, compact(self.decode(mask, mode, mask_path))

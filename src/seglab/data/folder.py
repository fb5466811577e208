"""Any dataset of images and masks in a folder: users' own data, and the seed projects'.

The layouts read (split folders, split lists, VOC-like, flat with a seeded train/val split)
and the order they are looked for in are ``seglab.data.layouts``'; the layout found is
logged. The mask of ``a.jpg`` is ``a`` plus the first of ``mask_suffixes`` that names a file
(``a.png``, ``a_mask.png``, ...). An image without a mask, or a mask without an image, stops
with the file named; with ``on_bad_sample="skip"`` such files are left out of the split with
a warning (and listed in ``dropped``).

``mask_format`` says how a mask stores classes:

- ``binary``: 0 = class 0, and 1 or 255 = class 1 (a mask is either 0/1 or 0/255; palette
  images by their indices);
- ``index``: pixel value = class id (grey or palette PNG: palette images are read by their
  indices, not their colours); ``ignore_index`` is void; with ``reduce_zero_label`` stored 0
  is void and 1..K are classes 0..K-1 (ADE20K's convention);
- ``rgb``: colours, class i having colour ``palette[i]`` (the data config's palette), and
  ``void_colours`` void;
- ``auto``: the one of these that reads the masks, found by scanning them
  (``seglab.data.conventions``; training settles it before the dataset is built).

Values that do not fit the format are an error naming the file, never a silent class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seglab.data.base import SegmentationDataset
from seglab.data.convention_names import Labels
from seglab.data.conventions import resolve_mask_format
from seglab.data.label_tables import as_colour_table, colours_to_labels, compact, index_lut, lookup
from seglab.data.layouts import IMAGE_SUFFIXES, MASK_SUFFIXES, detect_layout, log_once, split_pairs
from seglab.data.readers import check_same_size, read_label, read_rgb
from seglab.errors import InputError

FORMATS = ("binary", "index", "rgb")


class FolderDataset(SegmentationDataset):
    """Images and masks from a folder (see the module docstring)."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        mask_format: str = "binary",
        num_classes: int | None = 2,
        ignore_index: int = 255,
        palette: Sequence[Sequence[int]] | None = None,
        void_colours: Sequence[Sequence[int]] = (),
        image_suffixes: Sequence[str] = IMAGE_SUFFIXES,
        mask_suffixes: Sequence[str] = MASK_SUFFIXES,
        mask_suffix: str | None = None,
        reduce_zero_label: bool | None = False,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        scan_masks: int | None = 200,
        on_bad_sample: str = "error",
        transform=None,
    ) -> None:
        super().__init__(transform)
        if mask_format not in (*FORMATS, "auto"):
            raise InputError(
                f"data.dataset.mask_format={mask_format!r}; use one of {(*FORMATS, 'auto')}"
            )
        if num_classes is None:
            raise InputError(
                "folder: data.num_classes=null is inferred from the masks by train.py and "
                "check_data.py (seglab.data.conventions.infer_num_classes); here set it: "
                "data.num_classes=<the number of classes>"
            )
        suffixes = [mask_suffix] if mask_suffix else list(mask_suffixes)  # mask_suffix: old name
        self.root, self.split = Path(root).expanduser(), split
        layout = detect_layout(self.root, split)
        log_once(f"folder: {self.root}: layout {layout.describe()}")
        # (file, problem) of the files left out (on_bad_sample=skip: unpaired images / masks).
        self.dropped: list[tuple[str, str]] = []
        self.samples = split_pairs(
            layout,
            split,
            list(image_suffixes),
            suffixes,
            val_fraction,
            split_seed,
            dropped=self.dropped if on_bad_sample == "skip" else None,
        )
        colours = lambda cs: tuple(tuple(int(v) for v in c) for c in cs)  # noqa: E731
        labels = Labels(
            mask_format,
            num_classes,
            ignore_index,
            None if palette is None else colours(palette),
            colours(void_colours),
            reduce_zero_label,
        )
        if mask_format == "auto":
            labels = resolve_mask_format(layout, labels, suffixes, scan_masks, split_seed)
        self._set_labels(labels)

    def _set_labels(self, labels: Labels) -> None:
        """The decoding tables of ``labels`` (format, classes, void)."""
        self.mask_format, num_classes = labels.mask_format, int(labels.num_classes or 0)
        self.num_classes, self.ignore_index = num_classes, labels.ignore_index
        if self.mask_format == "binary" and num_classes != 2:
            raise InputError(f"folder: binary masks make 2 classes, not num_classes={num_classes}")
        if self.mask_format == "rgb":
            if labels.palette is None or len(labels.palette) != num_classes:
                raise InputError(
                    "data.dataset.mask_format=rgb needs one data.palette colour per class"
                )
            self.table = as_colour_table(labels.palette)
            for colour in labels.void_colours:
                if colour in self.table:
                    raise InputError(f"folder: void colour {colour} is also a class colour")
                self.table[colour] = labels.ignore_index
        if labels.reduce_zero_label and self.mask_format == "index":
            # Stored 0 is void, 1..K are classes 0..K-1.
            self.lut = index_lut(num_classes + 1, labels.ignore_index)
            self.lut[1 : num_classes + 1] -= 1
            self.lut[0] = labels.ignore_index
        else:
            self.lut = index_lut(num_classes, labels.ignore_index)

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

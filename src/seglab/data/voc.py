"""PASCAL VOC 2012 segmentation, read from the files as the VOC devkit tarball holds them.

Layout: ``VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png,
ImageSets/Segmentation/{train,val,trainval}.txt}``. ``root`` may be the ``VOC2012`` folder,
``VOCdevkit``, or the folder holding ``VOCdevkit`` (where the tarball was extracted), so the
usual ways of pointing at VOC all work.

Masks are palette (P-mode) PNGs: the palette *indices* are the labels (0 background, 1..20 the
classes, 255 the void border drawn around every object), so they are read with PIL without
converting to RGB. Any other value is a broken file and raises, naming it.

Optional SBD labels (Hariharan et al., "Semantic contours from inverse detectors", 2011):
``sbd_root`` is SBD's ``dataset/`` folder (``cls/<id>.mat`` with the MATLAB struct
``GTcls.Segmentation``, ``train.txt``, ``val.txt``). The split ``train_aug`` is then the usual
augmented training set: SBD train + SBD val + VOC train, minus VOC val (10,582 images for the
full data). Where VOC has its own mask for an image it is used (it is finer and has the void
border); SBD's mask only for the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seglab.data.base import SegmentationDataset
from seglab.data.file_pairs import read_split_list
from seglab.data.label_tables import compact, index_lut, lookup
from seglab.data.readers import check_same_size, read_label, read_rgb
from seglab.errors import InputError, MissingFileError


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MissingFileError(f"voc: {what} file missing: {path}")
    return path


def find_voc2012(root: str | Path) -> Path:
    """The ``VOC2012`` folder under ``root`` (itself, ``root/VOC2012`` or
    ``root/VOCdevkit/VOC2012``)."""
    root = Path(root).expanduser()
    candidates = [root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"]
    for c in candidates:
        if (c / "JPEGImages").is_dir() or (c / "ImageSets" / "Segmentation").is_dir():
            return c
    raise MissingFileError(
        f"voc: no VOC2012 folder (with JPEGImages/ and ImageSets/Segmentation/) at any of "
        f"{[str(c) for c in candidates]}; set data.root to VOCdevkit/VOC2012, VOCdevkit or the "
        "folder the VOC tarball was extracted into"
    )


def find_sbd(root: str | Path) -> Path:
    """SBD's ``dataset`` folder under ``root`` (itself, ``root/dataset`` or
    ``root/benchmark_RELEASE/dataset``, as SBD's tarball extracts)."""
    root = Path(root).expanduser()
    candidates = [root, root / "dataset", root / "benchmark_RELEASE" / "dataset"]
    for c in candidates:
        if (c / "cls").is_dir():
            return c
    raise MissingFileError(
        f"voc: no SBD dataset folder (with cls/) at any of {[str(c) for c in candidates]}; "
        "set data.dataset.sbd_root to SBD's dataset/ folder"
    )


def read_list(path: Path) -> list[str]:
    """Image ids of a split list, one a line."""
    return read_split_list(_existing(path, "split list"))


def read_sbd_mask(path: Path) -> np.ndarray:
    """The class mask of an SBD ``cls/<id>.mat`` file (``GTcls.Segmentation``)."""
    _existing(path, "SBD mask")
    from scipy.io import loadmat  # only SBD needs scipy

    try:
        seg = loadmat(str(path))["GTcls"]["Segmentation"][0][0]
    except Exception as e:  # a broken .mat fails in many ways inside scipy
        raise InputError(f"voc: cannot read SBD mask {path}: {e}") from e
    return np.asarray(seg)


class VOCDataset(SegmentationDataset):
    """PASCAL VOC 2012 (21 classes, 255 void), optionally with SBD's extra training labels."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        sbd_root: str | Path | None = None,
        num_classes: int = 21,  # background + 20 (names: conf/data/voc.yaml)
        ignore_index: int = 255,
        transform: Any = None,
    ) -> None:
        super().__init__(transform)
        self.root = find_voc2012(root)
        self.split, self.num_classes, self.ignore_index = split, num_classes, ignore_index
        # Labels 0..num_classes-1 and ignore_index; anything else is a broken file.
        self._lut = index_lut(num_classes, ignore_index)
        lists = self.root / "ImageSets" / "Segmentation"
        self.sbd = find_sbd(sbd_root) if sbd_root is not None else None
        if split == "train_aug":
            if self.sbd is None:
                raise InputError(
                    "voc: split 'train_aug' needs SBD: set data.dataset.sbd_root to SBD's "
                    "dataset/ folder"
                )
            extra = read_list(self.sbd / "train.txt") + read_list(self.sbd / "val.txt")
            val = set(read_list(lists / "val.txt"))
            ids: Sequence[str] = sorted((set(extra) | set(read_list(lists / "train.txt"))) - val)
            # VOC's own (finer, void-bordered) mask wherever VOC has one.
            self._voc_ids = set(read_list(lists / "trainval.txt"))
        else:
            if not (lists / f"{split}.txt").is_file():
                have = sorted(p.stem for p in lists.glob("*.txt"))
                raise InputError(
                    f"voc: unknown split {split!r}: no {lists / (split + '.txt')}; the lists "
                    f"here are {have}" + ("" if self.sbd is None else " and 'train_aug'")
                )
            ids = read_list(lists / f"{split}.txt")
            self._voc_ids = set(ids)
        self.ids = list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def _image_path(self, image_id: str) -> Path:
        path = self.root / "JPEGImages" / f"{image_id}.jpg"
        if not path.is_file() and self.sbd is not None and image_id not in self._voc_ids:
            alt = self.sbd / "img" / f"{image_id}.jpg"
            if alt.is_file():
                return alt
        return path

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_id = self.ids[index]
        image_path = _existing(self._image_path(image_id), "image")
        image = read_rgb(image_path)
        if image_id in self._voc_ids:
            path = _existing(self.root / "SegmentationClass" / f"{image_id}.png", "mask")
            mask, mode = read_label(path)
            if mode not in ("P", "L"):
                raise InputError(
                    f"voc: {path} is a {mode} image; VOC masks are palette (P-mode) PNGs "
                    "whose palette indices are the labels"
                )
        else:
            path = self.sbd / "cls" / f"{image_id}.mat"
            mask = read_sbd_mask(path)
        check_same_size(image, mask, image_path, path)
        return image, compact(lookup(mask, self._lut, path))

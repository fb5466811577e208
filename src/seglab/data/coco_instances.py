"""COCO 2017 instance segmentation (``task=instance``), read from the official files: all 80
categories or a subset (``categories``), with filters and layout as
``seglab.data.coco.CocoDataset`` has them; targets as ``seglab.data.instance_targets`` says.

Bad annotations (an image_id naming no image, an empty segmentation, a category_id not in the
categories list) stop the run when the dataset is built, naming the annotation ids, or with
``on_bad_sample=skip`` are left out with a warning and counted (``dropped``). Training images
with no usable annotation are left out (``drop_empty``); evaluation keeps every image.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from seglab.data.coco import CocoDataset, per_split
from seglab.data.instance_targets import InstanceDataset, Instances
from seglab.data.readers import read_rgb
from seglab.errors import InputError, MissingFileError

log = logging.getLogger(__name__)


class CocoInstancesDataset(CocoDataset, InstanceDataset):
    """COCO instances (see the module docstring); categories, filters and layout as
    :class:`seglab.data.coco.CocoDataset`."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        categories: str | Sequence[str | Sequence[str]] = "all",
        drop_empty: bool | Mapping[str, bool] | None = None,  # None: training splits only
        on_bad_sample: str = "error",
        num_classes: int | None = None,
        year: str | int = 2017,
        transform: Any = None,
        **filters: Any,
    ) -> None:
        super().__init__(
            root,
            split,
            categories=categories,
            num_classes=num_classes,
            year=year,
            transform=transform,
            **filters,
        )
        ix = self.index
        ann_ids = ix.ann_ids if ix.ann_ids is not None else np.full(len(ix.ann_category), -1)
        bad: dict[int, str] = {}  # annotation id -> problem
        for aid in ix.orphan_ann_ids:
            bad[aid] = "references an image_id that is not in the file's images"
        unknown = ~np.isin(ix.ann_category, list(ix.categories))
        for a in np.flatnonzero(unknown):
            bad[int(ann_ids[a])] = (
                f"has category_id {int(ix.ann_category[a])}, not in the categories list"
            )
        no_polygon = ix.poly_first[1:] == ix.poly_first[:-1]
        for a in np.flatnonzero(no_polygon):
            segm = ix.rles.get(int(a))
            if segm is None or not segm.get("counts"):
                bad[int(ann_ids[a])] = "has an empty segmentation"
        self.bad_anns = set(np.flatnonzero(unknown | np.isin(ann_ids, list(bad))).tolist())
        self.dropped = [f"{self.ann_file}: annotation id {k} {v}" for k, v in bad.items()]
        if bad:
            shown = "; ".join(f"annotation id {k} {v}" for k, v in list(bad.items())[:5])
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            if on_bad_sample != "skip":
                raise InputError(
                    f"coco: {self.ann_file}: {len(bad)} bad annotation(s): {shown}{more}. Fix "
                    "the file, or leave them out with data.on_bad_sample=skip"
                )
            log.warning(
                "on_bad_sample=skip: coco %s: left out %d bad annotation(s): %s%s",
                split,
                len(bad),
                shown,
                more,
            )
        drop = per_split(drop_empty, split, None)
        if split.startswith("train") if drop is None else drop:
            n = len(ix.file_names)
            owner = np.repeat(np.arange(n), np.diff(ix.ann_start))
            usable = np.isin(ix.ann_category, list(self.class_of)) & ~ix.ann_crowd
            usable[list(self.bad_anns)] = False
            has = np.bincount(owner[usable], minlength=n) > 0
            self.positions = self.positions[has[self.positions]]

    def load_instances(self, index: int) -> tuple[np.ndarray, Instances]:
        ix, pos = self.index, self.positions[index]
        path = self.image_dir / ix.file_names[pos]
        if not path.is_file():
            raise MissingFileError(f"coco: image file missing: {path}")
        image = read_rgb(path)
        h, w = int(ix.heights[pos]), int(ix.widths[pos])
        if image.shape[:2] != (h, w):
            raise InputError(
                f"coco: {path} is {image.shape[1]}x{image.shape[0]} but {self.ann_file.name} "
                f"says {w}x{h}"
            )
        masks, labels, crowd, area = [], [], [], []
        for a in range(ix.ann_start[pos], ix.ann_start[pos + 1]):
            cls = self.class_of.get(int(ix.ann_category[a]))
            if cls is None or a in self.bad_anns:
                continue
            m = self._instance(a, h, w)
            if m is None or not m.any():
                continue
            masks.append(m)
            labels.append(cls)
            crowd.append(bool(ix.ann_crowd[a]))
            area.append(float(ix.ann_area[a]) or float(m.sum()))
        inst = {
            "masks": np.stack(masks).astype(np.uint8) if masks else np.zeros((0, h, w), np.uint8),
            "labels": np.asarray(labels, np.int64),
            "iscrowd": np.asarray(crowd, bool),
            "area": np.asarray(area, np.float32),
        }
        return image, inst

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return InstanceDataset.load(self, index)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        return InstanceDataset.__getitem__(self, key)

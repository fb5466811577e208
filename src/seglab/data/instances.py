"""Instance segmentation data (``task=instance``): per-object masks, boxes and classes.

An item is ``{"image": C x H x W tensor, "target": {...}, "index", "image_id"}``; the target
holds ``masks`` (N x H x W uint8), ``boxes`` (N x 4 float, x0 y0 x1 y1: each mask's
enclosing box, transformed with the image), ``labels`` (N, class ids, background 0 never
occurs), ``iscrowd`` (N, bool) and ``area`` (N, float). Training splits leave crowd regions
and objects the augmentation removed entirely out of the targets; evaluation splits keep
every annotation (crowd regions flagged), so that COCO evaluation treats them as COCO does.

Augmentations are the data config's albumentations lists: masks (``masks=``) and boxes
(``bboxes=``, pascal_voc, clipped to the image) are transformed with the image; a box the
pipeline drops (an object cropped away) takes its mask and class with it. Batches are lists (Mask R-CNN resizes
each image itself), made by :func:`instance_collate`.

Datasets:

- :class:`ShapesInstancesDataset`: the built-in shapes, one mask per object, including
  touching objects of the same class (a later object occludes an earlier one);
- :class:`CocoInstancesDataset`: COCO 2017 instances JSON in the official layout, all 80
  categories or a subset (``categories``). Bad annotations (an image_id naming no image, an
  empty segmentation, a category_id not in the categories list) stop the run when the
  dataset is built, naming the annotation ids, or with ``on_bad_sample=skip`` are left out
  with a warning and counted (``dropped``). Training images with no usable annotation are
  left out (``drop_empty``); evaluation keeps every image.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader

from seglab.data.base import SegmentationDataset
from seglab.data.coco import CocoDataset, _per_split
from seglab.data.datamodule import SegDataModule
from seglab.data.readers import read_rgb, to_channels
from seglab.data.shapes import SPLIT_IDS, ShapesDataset, _paint, _polygon, split_settings

log = logging.getLogger(__name__)

Instances = dict[str, np.ndarray]  # masks (N,H,W) uint8, labels (N,), iscrowd (N,), area (N,)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """x0 y0 x1 y1 boxes enclosing each mask (N x H x W); x1, y1 exclusive (pixel edges)."""
    n = masks.shape[0]
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    m = masks.bool()
    rows, cols = m.any(dim=2), m.any(dim=1)
    h, w = m.shape[-2:]
    ys = torch.arange(h).expand(n, h)
    xs = torch.arange(w).expand(n, w)
    y0 = torch.where(rows, ys, h).min(dim=1).values
    y1 = torch.where(rows, ys, -1).max(dim=1).values + 1
    x0 = torch.where(cols, xs, w).min(dim=1).values
    x1 = torch.where(cols, xs, -1).max(dim=1).values + 1
    return torch.stack([x0, y0, x1, y1], dim=1).float()


class InstanceDataset(SegmentationDataset):
    """Base class: a subclass gives ``load_instances(i) -> (uint8 HxWx3 image, Instances)``
    and ``image_id(i)``; training splits (``split`` starting with "train") drop crowds."""

    split: str = "train"

    @property
    def training(self) -> bool:
        return str(self.split).startswith("train")

    def image_id(self, index: int) -> int:
        return int(index)

    def load_instances(self, index: int) -> tuple[np.ndarray, Instances]:  # pragma: no cover
        raise NotImplementedError

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """A semantic label map (class of the last instance on top, crowd = 255), so that
        tools written for semantic datasets can still look at the images."""
        image, inst = self.load_instances(index)
        label = np.zeros(image.shape[:2], np.uint8)
        for m, c, crowd in zip(inst["masks"], inst["labels"], inst["iscrowd"], strict=True):
            label[m.astype(bool)] = 255 if crowd else c
        return image, label

    def _augment(
        self, image: np.ndarray, masks: np.ndarray, boxes: np.ndarray, seed: int | None
    ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
        """The image, masks and boxes through the albumentations pipeline together. Returns
        the indices of the instances kept: a box the pipeline dropped (cropped away) takes
        its mask and class with it. Empty masks (an object occluded away) have no box to
        transform; their mask still is, and their box is the empty one."""
        if seed is not None:
            self.transform.set_random_seed(seed)
            random.seed(seed)
        n = len(masks)
        if not n:
            return self.transform(image=image)["image"], masks, boxes, np.arange(0)
        if "bboxes" not in getattr(self.transform, "processors", {}):
            # A pipeline made without bbox_params (not by InstanceDataModule) would pass the
            # boxes through untouched: take them from the transformed masks instead.
            out = self.transform(image=image, masks=np.ascontiguousarray(masks))
            new_masks = np.stack([np.asarray(m) for m in out["masks"]])
            new_boxes = boxes_from_masks(torch.from_numpy(new_masks)).numpy()
            return out["image"], new_masks, new_boxes, np.arange(n)
        valid = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        out = self.transform(
            image=image,
            masks=np.ascontiguousarray(masks),
            bboxes=boxes[valid],
            instance_ids=valid,
        )
        new_masks = np.stack([np.asarray(m) for m in out["masks"]])
        h, w = new_masks.shape[-2:]
        new_boxes = np.zeros((n, 4), np.float32)
        new_boxes[:, :2] = (w, h)  # the empty box, as boxes_from_masks gives it
        ids = np.asarray(out["instance_ids"], np.int64)
        new_boxes[ids] = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
        kept = np.setdiff1d(np.arange(n), np.setdiff1d(valid, ids))
        return out["image"], new_masks[kept], new_boxes[kept], kept

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, inst = self.load_instances(index)
        if self.in_channels != 3:
            image = to_channels(image, self.in_channels)
        masks, labels = inst["masks"], np.asarray(inst["labels"], np.int64)
        crowd, area = np.asarray(inst["iscrowd"], bool), np.asarray(inst["area"], np.float32)
        if self.training:  # crowd regions are no training targets
            masks, labels, crowd, area = masks[~crowd], labels[~crowd], crowd[~crowd], area[~crowd]
        size = image.shape[:2]
        boxes = boxes_from_masks(torch.from_numpy(np.ascontiguousarray(masks))).numpy()
        if self.transform is not None:
            image, masks, boxes, kept = self._augment(image, masks, boxes, seed)
            labels, crowd, area = labels[kept], crowd[kept], area[kept]
        if not isinstance(image, torch.Tensor):  # no ToTensorV2 in the pipeline
            image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        h, w = image.shape[-2:]
        masks = (
            torch.as_tensor(np.asarray(masks)).to(torch.uint8)
            if len(masks)
            else torch.zeros((0, h, w), dtype=torch.uint8)
        )
        boxes = torch.as_tensor(np.asarray(boxes, np.float32)).reshape(-1, 4)
        labels, crowd, area = (torch.from_numpy(v) for v in (labels, crowd, area))
        pixels = masks.flatten(1).sum(1).float()
        if (h, w) != tuple(size):  # the JSON's areas no longer hold
            area = pixels
        if self.training:  # objects the augmentation cut away entirely
            keep = pixels > 0
            masks, labels, crowd, area, boxes = (
                masks[keep],
                labels[keep],
                crowd[keep],
                area[keep],
                boxes[keep],
            )
        target = {
            "boxes": boxes,
            "labels": labels,
            "masks": masks,
            "iscrowd": crowd,
            "area": area,
        }
        return {"image": image, "target": target, "index": index, "image_id": self.image_id(index)}


# ------------------------------------------------------------------------------ shapes
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
    image = _paint(rng, h, w, 60.0, (0, 3))
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
        region = np.zeros((h, w), np.uint8)
        if cls == 1:
            axes = (int(r), int(r * rng.uniform(0.8, 1.0)))
            cv2.ellipse(region, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
        else:
            cv2.fillPoly(region, [_polygon(cls, rng, cx, cy, r)], 1)
        inside = region.astype(bool)
        local = image[inside].mean(axis=0) if inside.any() else None
        image[inside] = _paint(rng, h, w, 30.0, (0, 1, 2, 3), avoid=local)[inside]
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


class ShapesInstancesDataset(InstanceDataset):
    """Background + ellipse, rectangle, triangle, star, one instance mask per object."""

    CLASSES = ShapesDataset.CLASSES

    def __init__(
        self,
        split: str = "train",
        num_samples: Mapping[str, int] | int = 1000,
        seed: int = 0,
        min_size: Mapping[str, int] | int = 64,
        max_size: Mapping[str, int] | int = 96,
        max_objects: int = 4,
        touching: float = 0.5,
        min_area: int = 16,
        cache: bool = True,
        transform: Any = None,
    ) -> None:
        super().__init__(transform)
        num_samples, min_size, max_size = split_settings(split, num_samples, min_size, max_size)
        self.split, self.num_samples, self.seed = split, int(num_samples), seed
        self.args = (int(min_size), int(max_size), int(max_objects), float(touching), min_area)
        self._cache: dict[int, tuple[np.ndarray, Instances]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_samples

    def image_id(self, index: int) -> int:
        return int(index) + 1  # COCO ids start at 1

    def load_instances(self, index: int) -> tuple[np.ndarray, Instances]:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        sample = make_instances(self.seed, self.split, index, *self.args)
        if self._cache is not None:
            self._cache[index] = sample
        return sample


# -------------------------------------------------------------------------------- COCO
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
                raise ValueError(
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
        drop = _per_split(drop_empty, split, None)
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
            raise FileNotFoundError(f"coco: image file missing: {path}")
        image = read_rgb(path)
        h, w = int(ix.heights[pos]), int(ix.widths[pos])
        if image.shape[:2] != (h, w):
            raise ValueError(
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


# -------------------------------------------------------------------------- batching
def instance_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Lists of images and targets (no padding: the model resizes each image); bad-sample
    markers are passed on under ``"bad"`` as ``pad_collate`` does."""
    bad = [s["bad"] for s in batch if "bad" in s]
    good = [s for s in batch if "bad" not in s]
    out: dict[str, Any] = {}
    if good:
        out = {
            "image": [s["image"] for s in good],
            "target": [s["target"] for s in good],
            "index": torch.tensor([s["index"] for s in good]),
            "image_id": torch.tensor([s["image_id"] for s in good]),
        }
    if bad:
        out["bad"] = bad
    return out


class InstanceDataModule(SegDataModule):
    """``SegDataModule`` with instance datasets and list batches. ``instance_min_size`` /
    ``instance_max_size``: the resize range the instance models use for this data (read by
    the model configs through interpolation)."""

    def __init__(
        self,
        *args: Any,
        instance_min_size: int | None = None,
        instance_max_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.instance_min_size, self.instance_max_size = instance_min_size, instance_max_size

    def _compose(self, transforms: Sequence[Any]) -> A.Compose:
        """The data config's pipeline, with boxes (x0 y0 x1 y1 pixels, clipped to the image,
        each joined to its instance by ``instance_ids``)."""
        return A.Compose(
            [*transforms, A.Normalize(mean=self.mean, std=self.std), ToTensorV2()],
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["instance_ids"], clip=True),
            seed=self.seed,
        )

    def _loader(self, split: str, sampler, batch_size: int, drop_last: bool) -> DataLoader:
        loader = super()._loader(split, sampler, batch_size, drop_last)
        loader.collate_fn = instance_collate  # read when an iterator is made
        return loader

"""Instance segmentation targets (``task=instance``): per-object masks, boxes and classes,
and ``InstanceDataset``, the base class of the instance datasets that builds them.

An item is ``{"image": C x H x W tensor, "target": {...}, "index", "image_id"}``; the target
holds ``masks`` (N x H x W uint8), ``boxes`` (N x 4 float, x0 y0 x1 y1: each mask's
enclosing box, transformed with the image), ``labels`` (N, class ids, background 0 never
occurs), ``iscrowd`` (N, bool) and ``area`` (N, float). Training splits leave crowd regions
and objects the augmentation removed entirely out of the targets; evaluation splits keep
every annotation (crowd regions flagged), so that COCO evaluation treats them as COCO does.

Augmentations are the data config's albumentations lists: masks (``masks=``) and boxes
(``bboxes=``, pascal_voc, clipped to the image) are transformed with the image; a box the
pipeline drops (an object cropped away) takes its mask and class with it. Batches are lists
(Mask R-CNN resizes each image itself), made by ``seglab.data.collate.instance_collate``.
The datasets: ``shapes_instances.ShapesInstancesDataset`` and
``coco_instances.CocoInstancesDataset``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from seglab.data.base import SegmentationDataset
from seglab.data.readers import to_channels

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
        with_boxes = "bboxes" in getattr(self.transform, "processors", {})
        if not n:  # an image without objects (kept in evaluation); the pipeline wants boxes
            empty = {"bboxes": boxes, "instance_ids": np.arange(0)} if with_boxes else {}
            return self.transform(image=image, **empty)["image"], masks, boxes, np.arange(0)
        if not with_boxes:
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

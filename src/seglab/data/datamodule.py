"""One LightningDataModule for every dataset.

The data config (``conf/data/<name>.yaml``) is the one place for a dataset's facts: class
names, palette, ``num_classes``, ``ignore_index``, input channels and normalisation. Datasets
are given as one partial constructor (``_partial_: true``) called as
``dataset(split=..., transform=...)`` for each split, in ``setup``; augmentations
are lists of albumentations transforms to which normalisation and tensor conversion are
appended here, so the normalisation is written once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import albumentations as A
import cv2
import lightning as L
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset, Subset

from seglab.data.samplers import SeededSampler, UnpaddedDistributedSampler


def pad_collate(batch: list[dict[str, Any]], ignore_index: int) -> dict[str, torch.Tensor]:
    """Stacks samples; samples of different sizes are padded (bottom/right) to the largest,
    images with 0 and masks with ``ignore_index``, so padding never counts in loss or metrics."""
    h = max(s["image"].shape[-2] for s in batch)
    w = max(s["image"].shape[-1] for s in batch)
    images = batch[0]["image"].new_zeros((len(batch), batch[0]["image"].shape[0], h, w))
    masks = torch.full((len(batch), h, w), ignore_index, dtype=torch.long)
    for i, s in enumerate(batch):
        ih, iw = s["image"].shape[-2:]
        images[i, :, :ih, :iw] = s["image"]
        masks[i, :ih, :iw] = s["mask"]
    return {
        "image": images,
        "mask": masks,
        "index": torch.tensor([s["index"] for s in batch]),
    }


def worker_init(_: int) -> None:
    # OpenCV's own thread pool inside each worker would oversubscribe the CPU.
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


class SegDataModule(L.LightningDataModule):
    def __init__(
        self,
        dataset: Callable[..., Dataset],
        *,
        name: str,
        splits: dict[str, str | None] | None = None,
        num_classes: int,
        class_names: Sequence[str],
        palette: Sequence[Sequence[int]],
        ignore_index: int = 255,
        in_channels: int = 3,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        crop_size: int | None = None,  # only read by the config's transforms (interpolation)
        train_transforms: Sequence[Any] = (),
        eval_transforms: Sequence[Any] = (),
        batch_size: int = 8,
        eval_batch_size: int = 1,
        val_subset: int | None = None,
        num_workers: int = 2,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        seed: int = 0,
        class_weights: Sequence[float] | None = None,
        root: str | None = None,  # where the dataset lives; the dataset config interpolates it
    ) -> None:
        super().__init__()
        if len(class_names) != num_classes or len(palette) != num_classes:
            raise ValueError(
                f"data '{name}': num_classes={num_classes} but {len(class_names)} class_names "
                f"and {len(palette)} palette colours; the three must agree"
            )
        self.factory, self.root = dataset, root
        # Which of the dataset's own split names serves as train / val / test (null: none).
        self.splits = {"train": "train", "val": "val", "test": None, **(splits or {})}
        self.name, self.num_classes, self.class_names = name, num_classes, list(class_names)
        self.palette, self.ignore_index, self.in_channels = palette, ignore_index, in_channels
        self.mean, self.std, self.seed = list(mean), list(std), seed
        self.transforms = {
            "train": self._compose(train_transforms),
            "val": self._compose(eval_transforms),
            "test": self._compose(eval_transforms),
        }
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.val_subset, self.num_workers = val_subset, num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.datasets: dict[str, Dataset] = {}

    def _compose(self, transforms: Sequence[Any]) -> A.Compose:
        return A.Compose(
            [*transforms, A.Normalize(mean=self.mean, std=self.std), ToTensorV2()],
            seed=self.seed,
        )

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` ('train', 'val' or 'test'), built on first use."""
        if split not in self.datasets:
            if self.splits.get(split) is None:
                raise ValueError(f"data '{self.name}' has no {split} split")
            ds = self.factory(split=self.splits[split], transform=self.transforms[split])
            if len(ds) == 0:
                raise ValueError(f"data '{self.name}': the {split} split is empty")
            if split == "val" and self.val_subset and self.val_subset < len(ds):
                g = np.random.default_rng(self.seed)
                ds = Subset(ds, sorted(g.choice(len(ds), self.val_subset, replace=False).tolist()))
            self.datasets[split] = ds
        return self.datasets[split]

    @property
    def has_test(self) -> bool:
        return self.splits.get("test") is not None

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.dataset("train")
        if stage in (None, "fit", "validate"):
            self.dataset("val")
        if stage in (None, "test") and self.has_test:
            self.dataset("test")

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _loader(self, split: str, sampler, batch_size: int, drop_last: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=drop_last,
            collate_fn=partial(pad_collate, ignore_index=self.ignore_index),
            worker_init_fn=worker_init,
            multiprocessing_context="fork" if self.num_workers and os.name == "posix" else None,
        )

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        ds = self.dataset("train")
        sampler = SeededSampler(ds, num_replicas=world, rank=rank, seed=self.seed, drop_last=True)
        return self._loader("train", sampler, self.batch_size, drop_last=True)

    def _eval_loader(self, split: str) -> DataLoader:
        world, rank = self._world()
        sampler = UnpaddedDistributedSampler(self.dataset(split), num_replicas=world, rank=rank)
        return self._loader(split, sampler, self.eval_batch_size, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

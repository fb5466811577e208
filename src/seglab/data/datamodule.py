"""The LightningDataModules: one for every semantic dataset, one for instance datasets.

The data config (``conf/data/<name>.yaml``, over the shared defaults of
``conf/data/_base.yaml``) is the one place for a dataset's facts: class names, palette,
``num_classes``, ``ignore_index``, input channels and normalisation. Datasets are given as one
partial constructor (``_partial_: true``) called as ``dataset(split=..., transform=...)`` for
each split, in ``setup``; augmentations are lists of albumentations transforms to which
normalisation and tensor conversion are appended here, so the normalisation is written once.

Loaders read every split through the bad-sample guard of ``seglab.data.bad_samples``
(``data.on_bad_sample``); ``teardown`` logs what was skipped, ``skipped`` holds the counts.
"""

from __future__ import annotations

import logging
import os
import signal
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

from seglab.data.bad_samples import ON_BAD_SAMPLE, GuardedDataset, SegDataLoader
from seglab.data.collate import instance_collate, pad_collate
from seglab.data.download import download
from seglab.data.samplers import SeededSampler, UnpaddedDistributedSampler
from seglab.data.subsets import unwrap
from seglab.errors import InputError

log = logging.getLogger(__name__)


def worker_init(_: int) -> None:
    """Sets up each DataLoader worker of the DataModule (and of the tools that read a dataset
    as it does: check_data, data_stats, predict)."""
    # OpenCV's own thread pool inside each worker would oversubscribe the CPU.
    cv2.setNumThreads(0)
    torch.set_num_threads(1)
    # Ctrl+C in a terminal reaches every process of the group. A worker that died of it would
    # break the batch the main process still has to finish before it stops (see
    # InterruptCheckpoint); the main process shuts its workers down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class SegDataModule(L.LightningDataModule):
    """The datasets, transforms and loaders of the splits of one semantic dataset; its
    arguments are the data config's keys (see the module docstring)."""

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
        on_bad_sample: str = "error",
        download: bool = False,
        download_urls: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise InputError(
                f"data.on_bad_sample={on_bad_sample!r}; use one of {list(ON_BAD_SAMPLE)}"
            )
        self.on_bad_sample = on_bad_sample
        if len(class_names) != num_classes or len(palette) != num_classes:
            raise InputError(
                f"data '{name}': num_classes={num_classes} but {len(class_names)} class_names "
                f"and {len(palette)} palette colours; the three must agree"
            )
        self.factory, self.root = dataset, root
        self.download, self.download_urls = download, list(download_urls)
        if download and not self.download_urls:
            raise InputError(
                f"data '{name}' has no public download (data.download=true); place its files "
                f"at data.root={root} in the publisher's layout and set data.download=false"
            )
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
        self.guarded: dict[str, GuardedDataset] = {}  # what the loaders read, by split
        self.train_sampler: SeededSampler | None = None
        self.resume: tuple[int, int] | None = None  # (epoch, samples to skip) on resume

    def _compose(self, transforms: Sequence[Any]) -> A.Compose:
        """The config's transforms, then normalisation and tensor conversion."""
        return A.Compose(
            [*transforms, A.Normalize(mean=self.mean, std=self.std), ToTensorV2()],
            seed=self.seed,
            **self._target_params(),
        )

    def _target_params(self) -> dict[str, Any]:
        """What ``A.Compose`` needs besides image and mask (none for semantic data)."""
        return {}

    def _collate(self) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return partial(pad_collate, ignore_index=self.ignore_index)

    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` ('train', 'val' or 'test'), built on first use."""
        if split not in self.datasets:
            if self.splits.get(split) is None:
                raise InputError(f"data '{self.name}' has no {split} split")
            ds = self.factory(split=self.splits[split], transform=self.transforms[split])
            ds.in_channels = self.in_channels  # read grey for data.in_channels=1
            if len(ds) == 0:
                raise InputError(
                    f"data '{self.name}': the {split} split ({self.splits[split]!r}) is empty "
                    f"in {self.root}: add its samples there, or leave it out with "
                    f"data.splits.{split}=null if you do not need it"
                )
            if split == "val" and self.val_subset and self.val_subset < len(ds):
                g = np.random.default_rng(self.seed)
                ds = Subset(ds, sorted(g.choice(len(ds), self.val_subset, replace=False).tolist()))
            self.datasets[split] = ds
        return self.datasets[split]

    @property
    def has_test(self) -> bool:
        return self.splits.get("test") is not None

    def prepare_data(self) -> None:
        """``data.download=true``: fetches and extracts the dataset into ``data.root`` unless
        its training split can already be read there (Lightning calls this on one process)."""
        if not self.download:
            return
        try:
            self.factory(split=self.splits["train"], transform=None)
            return
        except (FileNotFoundError, ValueError):
            pass
        download(self.download_urls, self.root)

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
        if split not in self.guarded:
            self.guarded[split] = GuardedDataset(self.dataset(split), split)
        return SegDataLoader(
            self.guarded[split],
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            drop_last=drop_last,
            collate_fn=self._collate(),
            worker_init_fn=worker_init,
            multiprocessing_context="fork" if self.num_workers and os.name == "posix" else None,
            on_bad_sample=self.on_bad_sample,
        )

    @property
    def skipped(self) -> dict[str, dict[str, int]]:
        """Per split: ``samples`` (bad samples skipped, each once), ``times`` (skips, repeats
        in later epochs included) and ``dropped`` (unpaired files left out when built)."""
        out = {}
        for split, ds in self.datasets.items():
            guard = self.guarded.get(split)
            dropped = len(getattr(unwrap(ds)[0], "dropped", ()))
            samples, times = (len(guard.bad), guard.skipped) if guard else (0, 0)
            if samples or dropped:
                out[split] = {"samples": samples, "times": times, "dropped": dropped}
        return out

    def teardown(self, stage: str | None = None) -> None:
        """Logs how many bad samples were skipped (``on_bad_sample=skip``)."""
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split, n in self.skipped.items():
            if stage is not None and split not in splits.get(stage, (split,)):
                continue
            log.warning(
                "on_bad_sample=skip: %s split: %d bad sample(s) skipped (%d time(s) in all), "
                "%d unpaired file(s) left out when it was built; the warnings above name each "
                "file, `python src/check_data.py` lists them all",
                split,
                n["samples"],
                n["times"],
                n["dropped"],
            )

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        ds = self.dataset("train")
        if len(ds) // world < self.batch_size:  # whole batches only (drop_last): none at all
            per = f" ({world} processes, {len(ds) // world} images each)" if world > 1 else ""
            raise InputError(
                f"data '{self.name}': the train split has {len(ds)} images{per}, fewer than one "
                f"batch (data.batch_size={self.batch_size}), so nothing would be trained; set "
                f"data.batch_size={max(1, len(ds) // world)} or lower, or add training images"
            )
        self.train_sampler = SeededSampler(
            ds, num_replicas=world, rank=rank, seed=self.seed, drop_last=True
        )
        if self.resume is not None:
            self.train_sampler.resume_at(*self.resume)
        return self._loader("train", self.train_sampler, self.batch_size, drop_last=True)

    # Mid-epoch resume. Lightning saves the DataModule's ``state_dict`` in every checkpoint
    # and hands it back on resume: the epoch and the batches of it already trained on. The
    # ``SeededSampler`` then starts that epoch after those batches' samples, without reading
    # them, so a seeded run resumed from a mid-epoch checkpoint (``interrupted.ckpt`` after
    # SIGTERM or Ctrl+C, ``every_n_train_steps``) trains on exactly the batches an
    # uninterrupted run would have.
    def state_dict(self) -> dict[str, int]:
        if self.trainer is None:
            return {}
        loop = self.trainer.fit_loop
        batches = loop.epoch_loop.batch_progress.current.processed
        if batches >= self.trainer.num_training_batches:
            return {}  # the epoch is over: the next one starts at its beginning
        return {"epoch": loop.epoch_progress.current.processed, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not state.get("batches"):
            return
        self.resume = (state["epoch"], state["batches"] * self.batch_size)
        if self.train_sampler is not None:  # Lightning may have built the loader already
            self.train_sampler.resume_at(*self.resume)

    def _eval_loader(self, split: str) -> DataLoader:
        world, rank = self._world()
        sampler = UnpaddedDistributedSampler(self.dataset(split), num_replicas=world, rank=rank)
        return self._loader(split, sampler, self.eval_batch_size, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


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

    def _target_params(self) -> dict[str, Any]:
        """Boxes (x0 y0 x1 y1 pixels, clipped to the image, each joined to its instance by
        ``instance_ids``) are transformed with the image and its masks."""
        return {
            "bbox_params": A.BboxParams(
                format="pascal_voc", label_fields=["instance_ids"], clip=True
            )
        }

    def _collate(self) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
        return instance_collate

"""One LightningDataModule for every dataset.

The data config (``conf/data/<name>.yaml``) is the one place for a dataset's facts: class
names, palette, ``num_classes``, ``ignore_index``, input channels and normalisation. Datasets
are given as one partial constructor (``_partial_: true``) called as
``dataset(split=..., transform=...)`` for each split, in ``setup``; augmentations
are lists of albumentations transforms to which normalisation and tensor conversion are
appended here, so the normalisation is written once.

Bad samples (``on_bad_sample``). Loaders read each dataset through ``GuardedDataset``, which
turns the ``ValueError`` / ``OSError`` a bad file raises on loading (a corrupt image, a mask
of another size, a label value not in the class table: the datasets' messages name the file)
into a marker sample instead of raising inside a worker. ``pad_collate`` leaves markers out
of the tensors and passes them on under ``"bad"``; ``SegDataLoader`` takes them out of each
batch in the main process, whatever the number of workers, and then

- ``on_bad_sample=error`` (default): raises the loading error there, as itself (its type and
  message, the file first; a worker's traceback is chained as its cause), not buried in
  PyTorch's "Caught ValueError in DataLoader worker process 0" text;
- ``on_bad_sample=skip``: logs a warning naming the file and the problem the first time a
  sample is skipped, counts every skip, drops batches left empty (a batch of only bad
  samples never reaches the model) and raises if a whole pass over a split had nothing
  but bad samples. ``teardown`` (the end of fit / validate / test) logs how many samples of
  each split were skipped; ``skipped`` holds the counts. Datasets that find unpaired files
  when they are built (folder, CamVid, MSRC) leave those out with a warning instead of
  stopping, listed in their ``dropped``; these are reported at the end too.

Errors that are not about a file (a bug, an out-of-memory) are never caught.
"""

from __future__ import annotations

import logging
import os
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import albumentations as A
import cv2
import lightning as L
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset, Subset

from seglab.data.download import download
from seglab.data.samplers import SeededSampler, UnpaddedDistributedSampler

log = logging.getLogger(__name__)

ON_BAD_SAMPLE = ("error", "skip")
# What loading a bad file raises (the datasets' and readers' errors name the file).
BAD_FILE_ERRORS = (ValueError, OSError)


def sample_file(dataset: Dataset, index: int) -> str | None:
    """The file behind item ``index`` of a seglab dataset (its image), when it says."""
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, dataset.indices[index]
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        first = samples[index]
        return str(first[0] if isinstance(first, tuple | list) else first)
    return None


class WorkerTraceback(Exception):
    """The traceback of a loading error in a DataLoader worker (chained as its cause)."""


class GuardedDataset(Dataset):
    """Returns a marker ``{"bad": ...}`` for a sample whose loading raises a bad-file error,
    so that the error travels with the batch to the main process (see the module
    docstring). ``skipped`` / ``bad`` / ``warned`` are kept by the main process's copy."""

    def __init__(self, dataset: Dataset, split: str) -> None:
        self.dataset, self.split = dataset, split
        self.skipped = 0  # samples skipped, repeats (later epochs) included
        self.bad: dict[int, str] = {}  # index -> "file: problem", each bad sample once

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        try:
            return self.dataset[key]
        except BAD_FILE_ERRORS as e:
            index = key[0] if isinstance(key, tuple) else key
            in_worker = torch.utils.data.get_worker_info() is not None
            return {
                "bad": {
                    "index": int(index),
                    "file": sample_file(self.dataset, index),
                    "type": type(e),
                    "message": str(e),
                    # In the main process the exception itself (with its traceback) is kept.
                    "error": None if in_worker else e,
                    "traceback": "".join(traceback.format_exception(e)) if in_worker else "",
                }
            }

    def describe(self, bad: dict[str, Any]) -> str:
        message, file = bad["message"], bad["file"]
        return message if file is None or file in message else f"{file}: {message}"

    def record(self, bad: dict[str, Any]) -> None:
        """Counts a skipped sample; warns the first time each sample is skipped."""
        self.skipped += 1
        if bad["index"] not in self.bad:
            self.bad[bad["index"]] = self.describe(bad)
            log.warning(
                "on_bad_sample=skip: skipping %s sample %d, %s",
                self.split,
                bad["index"],
                self.bad[bad["index"]],
            )


def raise_bad(bad: dict[str, Any]) -> None:
    """Raises the loading error of a bad-sample marker in the main process: the exception
    itself, or (from a worker) one of its type and message, the worker's traceback chained
    as its cause."""
    if bad["error"] is not None:
        raise bad["error"]
    try:
        error = bad["type"](bad["message"])
    except Exception:  # a type that wants other arguments
        error = ValueError(bad["message"])
    raise error from WorkerTraceback(
        f"in a DataLoader worker, loading sample {bad['index']}:\n{bad['traceback']}"
    )


class SegDataLoader(DataLoader):
    """A DataLoader over a ``GuardedDataset`` that takes the bad-sample markers out of each
    batch in the main process and raises or skips them (``skip``), as the module docstring
    says. Batches it yields hold only ``image``, ``mask`` and ``index``."""

    def __init__(self, *args: Any, on_bad_sample: str = "error", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_bad_sample = on_bad_sample

    def __iter__(self) -> Iterator[Any]:
        guard = self.dataset if isinstance(self.dataset, GuardedDataset) else None
        yielded = skipped = 0
        for batch in super().__iter__():
            bad = batch.pop("bad", None) if isinstance(batch, dict) else None
            for b in bad or ():
                if guard is None or self.on_bad_sample != "skip":
                    raise_bad(b)
                guard.record(b)
                skipped += 1
            if "image" in batch:
                yielded += 1
                yield batch
        if skipped and not yielded and guard is not None:
            raise ValueError(
                f"on_bad_sample=skip: every sample of the {guard.split} split read in this "
                f"pass was bad ({skipped} skipped, see the warnings above); nothing is left "
                "to train or evaluate on. Run `python src/check_data.py` to list the problems"
            )


def pad_collate(batch: list[dict[str, Any]], ignore_index: int) -> dict[str, Any]:
    """Stacks samples; samples of different sizes are padded (bottom/right) to the largest,
    images with 0 and masks with ``ignore_index``, so padding never counts in loss or metrics.
    Bad-sample markers (``GuardedDataset``) are left out and passed on as ``"bad"``; a batch
    of only bad samples is ``{"bad": [...]}``."""
    bad = [s["bad"] for s in batch if "bad" in s]
    if bad:
        batch = [s for s in batch if "bad" not in s]
        if not batch:
            return {"bad": bad}
        return {**pad_collate(batch, ignore_index), "bad": bad}
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


def unwrap(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The dataset that has ``load`` and the indices into it that ``dataset`` covers
    (a ``Subset``, e.g. the DataModule's ``val_subset``, covers its ``indices``)."""
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        indices = [int(dataset.indices[i]) for i in indices]
        dataset = dataset.dataset
    if not hasattr(dataset, "load"):
        raise TypeError(f"{type(dataset).__name__} has no load(i); seglab datasets have one")
    return dataset, indices


def worker_init(_: int) -> None:
    # OpenCV's own thread pool inside each worker would oversubscribe the CPU.
    cv2.setNumThreads(0)
    torch.set_num_threads(1)
    # Ctrl+C in a terminal reaches every process of the group. A worker that died of it would
    # break the batch the main process still has to finish before it stops (see
    # InterruptCheckpoint); the main process shuts its workers down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
        on_bad_sample: str = "error",
        download: bool = False,
        download_urls: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if on_bad_sample not in ON_BAD_SAMPLE:
            raise ValueError(
                f"data.on_bad_sample={on_bad_sample!r}; use one of {list(ON_BAD_SAMPLE)}"
            )
        self.on_bad_sample = on_bad_sample
        if len(class_names) != num_classes or len(palette) != num_classes:
            raise ValueError(
                f"data '{name}': num_classes={num_classes} but {len(class_names)} class_names "
                f"and {len(palette)} palette colours; the three must agree"
            )
        self.factory, self.root = dataset, root
        self.download, self.download_urls = download, list(download_urls)
        if download and not self.download_urls:
            raise ValueError(
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
            ds.in_channels = self.in_channels  # read grey for data.in_channels=1
            if len(ds) == 0:
                raise ValueError(
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
            collate_fn=partial(pad_collate, ignore_index=self.ignore_index),
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

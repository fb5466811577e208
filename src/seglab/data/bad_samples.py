"""Bad samples (``data.on_bad_sample``): a bad file stops the run naming it, or is skipped.

Loaders read each dataset through ``GuardedDataset``, which turns the ``ValueError`` /
``OSError`` a bad file raises on loading (a corrupt image, a mask of another size, a label
value not in the class table: the datasets' messages name the file) into a marker sample
instead of raising inside a worker. The collate functions (``seglab.data.collate``) leave
markers out of the tensors and pass them on under ``"bad"``; ``SegDataLoader`` takes them
out of each batch in the main process, whatever the number of workers, and then

- ``on_bad_sample=error`` (default): raises the loading error there as an ``InputError``
  (its message, the file first, then what to do; the original error or a worker's
  traceback is chained as its cause), not buried in PyTorch's "Caught ValueError in
  DataLoader worker process 0" text;
- ``on_bad_sample=skip``: logs a warning naming the file and the problem the first time a
  sample is skipped, counts every skip, drops batches left empty (a batch of only bad
  samples never reaches the model) and raises if a whole pass over a split had nothing
  but bad samples. The DataModule's ``teardown`` (the end of fit / validate / test) logs how
  many samples of each split were skipped. Datasets that find unpaired files when they are
  built (folder, CamVid, MSRC) leave those out with a warning instead of stopping, listed in
  their ``dropped``; these are reported at the end too.

Errors that are not about a file (a bug, an out-of-memory) are never caught.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from seglab.data.subsets import sample_file
from seglab.errors import InputError

log = logging.getLogger(__name__)

ON_BAD_SAMPLE = ("error", "skip")
# What loading a bad file raises (the datasets' and readers' errors name the file).
BAD_FILE_ERRORS = (ValueError, OSError)


class WorkerTraceback(Exception):
    """The traceback of a loading error in a DataLoader worker (chained as its cause)."""


class GuardedDataset(Dataset):
    """Returns a marker ``{"bad": ...}`` for a sample whose loading raises a bad-file error,
    so that the error travels with the batch to the main process (see the module
    docstring). ``skipped`` and ``bad`` are kept by the main process's copy."""

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


# What to do about a bad file, at the end of the error that names it.
BAD_SAMPLE_FIX = (
    "List every problem of the dataset with `python src/check_data.py` (same data "
    "overrides), or leave bad samples out with data.on_bad_sample=skip"
)


def raise_bad(bad: dict[str, Any]) -> None:
    """Raises the loading error of a bad-sample marker in the main process as an
    ``InputError``: its message (the file first) and what to do; the original exception (or,
    from a worker, its traceback) is chained as its cause."""
    error = InputError(f"{bad['message']}. {BAD_SAMPLE_FIX}")
    if bad["error"] is not None:
        raise error from bad["error"]
    raise error from WorkerTraceback(
        f"in a DataLoader worker, loading sample {bad['index']}:\n{bad['traceback']}"
    )


class SegDataLoader(DataLoader):
    """A DataLoader over a ``GuardedDataset`` that takes the bad-sample markers out of each
    batch in the main process and raises or skips them (``skip``), as the module docstring
    says. Batches it yields hold no markers."""

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
            raise InputError(
                f"on_bad_sample=skip: every sample of the {guard.split} split read in this "
                f"pass was bad ({skipped} skipped, see the warnings above); nothing is left "
                "to train or evaluate on. Run `python src/check_data.py` to list the problems"
            )

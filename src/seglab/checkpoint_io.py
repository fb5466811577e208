"""Checkpoint files that survive crashes, and loading that never runs code.

``AtomicCheckpointIO`` (the trainer's ``plugins`` in ``conf/trainer/default.yaml``) writes
every checkpoint Lightning saves (``last.ckpt``, the best ones, ``interrupted.ckpt``) to a
temporary file in the same folder, flushes it to disk (``fsync``) and only then renames it
over the final name with ``os.replace``, which is atomic on POSIX and Windows. A process
killed at any moment (SIGKILL, power loss after the fsync) leaves either the previous file or
the new one under the final name, never a partial one; at worst a stale
``.<name>.<pid>.<random>.tmp`` file stays behind after a SIGKILL during the write.

``safe_load`` is ``torch.load(weights_only=True)``: plain tensors and containers only. A file
whose pickle would build other objects (and so could run code, e.g. through ``__reduce__``)
is refused with an ``InputError`` naming the file, before any of its code runs; a file that
is not a checkpoint at all (truncated, empty) gets another message, with its size.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seglab.errors import InputError, MissingFileError


def _damaged(path: Path, reason: str) -> InputError:
    size = path.stat().st_size if path.is_file() else 0
    return InputError(
        f"{path} is not a readable checkpoint ({size} bytes): {reason}. It may be truncated "
        "(a copy or a save that did not finish) or not a PyTorch file at all; copy it again, "
        "or use another checkpoint (last.ckpt or a best one in the run's checkpoints/ folder)"
    )


def safe_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain containers. A file that is not a
    checkpoint (truncated, empty, other bytes) and one whose pickle would build other objects
    (and so could run code on load) are refused with two different ``InputError`` messages,
    both naming the file; neither suggests turning the safety check off."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not zipfile.is_zipfile(path):  # seglab, Lightning and torch.save write zip archives
        if head.startswith(b"PK"):
            raise _damaged(path, "a zip archive whose end (central directory) is missing")
        if not head.startswith(b"\x80"):  # nor torch's older plain-pickle format
            what = "an empty file" if not head else f"it starts with {head!r}"
            raise _damaged(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found is None:  # not a pickle seglab could ever read
            raise _damaged(path, "its contents are not a pickle of tensors") from None
        raise InputError(
            f"{path} was refused: loading it would build {found.group(1)}, which could run "
            "code, and seglab loads only tensors and plain containers. Use a checkpoint "
            "written by seglab / Lightning, or a plain state dict (torch.save(model."
            "state_dict(), ...)) from a source you trust"
        ) from None
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _damaged(path, reason.split(". This is")[0]) from None


def _fsync_dir(folder: Path) -> None:
    """Makes a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace``: the
    file at ``path`` is at every moment either the old one or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder (so the rename never crosses file systems), hidden, not ``*.ckpt`` (so
    # nothing that lists checkpoints picks it up), unique per writer.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:  # normal permissions (umask), unlike mkstemp's 0600
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # also KeyboardInterrupt: leave no temporary file behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic, fsynced writes of local files and
    ``weights_only`` loading (resuming with ``ckpt_path=`` never runs code from the file).
    Remote paths (``s3://`` ...) keep Lightning's own fsspec transaction."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self,
        path: Any,
        map_location: Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if weights_only is False or "://" in str(path):  # asked for explicitly, or remote
            return super().load_checkpoint(path, map_location, weights_only)
        if not Path(path).is_file():
            raise MissingFileError(f"checkpoint {path} does not exist; pass ckpt_path=<file.ckpt>")
        return safe_load(path, map_location)

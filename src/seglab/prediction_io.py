"""What every prediction shares (semantic and instance, checkpoint and ONNX): the images under
``input`` (listed, then read and normalised in DataLoader workers, by the datasets' rules), the
checkpoint's module on the device with the precision to run it in, where each image's outputs
go (planned and checked before the model is loaded, so that no output overwrites another and
an unwritable folder stops the run at once), and the report of the files that could not be
read (an error: a run that skipped inputs must not look finished)."""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from seglab.data.datamodule import worker_init
from seglab.data.readers import read_image
from seglab.errors import InputError, MissingFileError
from seglab.task_module import TaskModule

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# What an image's output name ends with: the mask, the overlay, the instance masks' folder;
# with save_probs=true the class probabilities, with uncertainty=true the entropy map and,
# with several test-time-augmentation views, their variance.
MASK, OVERLAY, INSTANCE_MASKS = ".png", "_overlay.png", "_instances"
PROBS, ENTROPY, TTA_VAR = "_probs.npy", "_entropy.png", "_tta_var.png"
FIX_NAMES = "rename one of the two inputs, or predict them into separate output= folders"


def list_images(path: Path, exclude: Path | None = None) -> list[Path]:
    """``path`` itself if it is a file, else every image under the folder, sorted, less those
    under ``exclude`` (the output folder, when it is inside the input: earlier outputs are
    not inputs). No image at all is an error: a run that predicts nothing must not succeed."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise MissingFileError(f"input {path} does not exist; pass input=<image or folder>")
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    skip = exclude.resolve() if exclude is not None else None
    inside = skip is not None and skip != path.resolve() and skip.is_relative_to(path.resolve())
    if inside:
        kept = [p for p in found if not p.resolve().is_relative_to(skip)]
        if len(kept) < len(found):
            log.info("left out %d files under the output folder %s", len(found) - len(kept), skip)
        found = kept
    if not found:
        raise InputError(
            f"input {path} holds no image: predict reads files ending "
            f"{', '.join(sorted(IMAGE_SUFFIXES))} (any case) in the folder and its subfolders"
            f"{f' (not under the output folder {exclude})' if inside else ''}; "
            "pass input=<an image or a folder of images>"
        )
    return found


class ImageFiles(torch.utils.data.Dataset):
    """Reads and normalises one image per item (in DataLoader workers); an unreadable file
    gives its error instead, so that one bad file does not stop the others."""

    def __init__(self, paths: list[Path], grey: bool, mean: Sequence, std: Sequence) -> None:
        self.paths, self.grey = paths, grey
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, Any, Any]:
        try:
            image = read_image(self.paths[i], 1 if self.grey else 3)
        except Exception as err:  # reported by predict, after the others
            return i, None, err
        x = torch.from_numpy(((image / 255.0 - self.mean) / self.std).astype(np.float32))
        return i, image, x.permute(2, 0, 1)


def _as_is(item: Any) -> Any:
    return item


def image_loader(
    paths: list[Path], data: dict[str, Any], num_workers: int
) -> torch.utils.data.DataLoader:
    """Yields ``(index, image as read, normalised tensor)`` per file, or ``(index, None,
    error)`` for a file that could not be read; ``data``: the run's data facts."""
    return torch.utils.data.DataLoader(
        ImageFiles(paths, data["in_channels"] == 1, data["mean"], data["std"]),
        batch_size=None,
        collate_fn=_as_is,  # keep the numpy image as it is
        num_workers=num_workers,
        worker_init_fn=worker_init if num_workers else None,
    )


def on_device(module: TaskModule, cfg: DictConfig, run: DictConfig) -> tuple[torch.device, str]:
    """Puts ``module`` in eval mode on the GPU if there is one; returns the device and the
    precision to predict in (``cfg.precision``, else the training run's)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device).eval()
    return device, str(cfg.get("precision") or run.trainer.get("precision", "32-true"))


def _key(path: Path) -> str:
    """One key per file: absolute, links resolved (and case folded where the platform's
    paths are, as on Windows)."""
    return os.path.normcase(os.path.realpath(path))


def _named(stem: Path, ending: str) -> Path:
    return stem.with_name(stem.name + ending)


def output_stems(paths: Sequence[Path], in_root: Path, out_root: Path) -> list[Path]:
    """Where each input's outputs go, less their ending: its place under ``in_root`` (its
    name, for a single file) under ``out_root``, without its extension unless another input
    in the same folder has the same name but for the extension (``x.jpg`` and ``x.png``, or
    ``X.png``): then each keeps its own (``x.jpg.png``, ``x.png.png``), so that neither
    result overwrites the other."""
    rels = [p.relative_to(in_root) if in_root.is_dir() else Path(p.name) for p in paths]
    bare = [str(rel.with_suffix("")).casefold() for rel in rels]  # A.jpg and a.png share
    shared = Counter(bare)
    return [
        out_root / (rel if shared[b] > 1 else rel.with_suffix(""))
        for rel, b in zip(rels, bare, strict=True)
    ]


@dataclass(frozen=True)
class OutputPlan:
    """Every input and where its outputs go, fixed (and checked) before anything is
    written."""

    inputs: list[Path]
    stems: list[Path]
    out_root: Path

    def output(self, i: int, ending: str) -> Path:
        """Input ``i``'s output ending with ``ending`` (``MASK``, ``OVERLAY``, ``PROBS``,
        ``ENTROPY``, ``TTA_VAR``, ``INSTANCE_MASKS``); its folder is created."""
        self.stems[i].parent.mkdir(parents=True, exist_ok=True)
        return _named(self.stems[i], ending)


def _collision(first: tuple[str, Path], second: tuple[str, Path], path: Path) -> InputError:
    """The error for two claims on one file, each (what it is, whose): ("input", x),
    ("output", x) or (a config key, its file)."""
    (kind_a, a), (kind_b, b) = sorted([first, second], key=lambda c: c[0] != "input")
    if kind_a == "input":
        return InputError(
            f"the output {path} of {b} would overwrite the input {a}; "
            "pass output=<a folder that holds no input> and run again"
        )
    if kind_a != "output" or kind_b != "output":  # another file of the run, by config key
        (key, file), (_, whose) = (first, second) if kind_a != "output" else (second, first)
        return InputError(
            f"{key}={file} is also the output {path} of {whose}; pass {key}=<another file>"
        )
    return InputError(
        f"the inputs {a} and {b} would both write {path}; {FIX_NAMES}, and run again "
        "(docs/inference.md#output-names)"
    )


def plan_outputs(
    in_root: Path,
    out_root: Path,
    endings: Sequence[str],
    folders: Sequence[str] = (),
    others: Mapping[str, Path] | None = None,
) -> OutputPlan:
    """Lists the inputs and names every output of the run: ``endings`` (files per input),
    ``folders`` (a folder per input, whose files are known only once predicted), ``others``
    (other files the run writes, by config key). Refuses with ``InputError`` before anything
    is written if two outputs are one file, an output is an input, or an output lies in
    another input's folder: otherwise one result would silently replace another."""
    inputs = list_images(in_root, exclude=out_root)
    stems = output_stems(inputs, in_root, out_root)
    claims: dict[str, tuple[str, Path]] = {}  # file -> ("input" / "output" / key, whose)

    def claim(path: Path, kind: str, whose: Path) -> None:
        key = _key(path)
        if key in claims and claims[key] != (kind, whose):
            raise _collision(claims[key], (kind, whose), path)
        claims[key] = (kind, whose)

    for path in inputs:  # (one file twice, through a link, is no collision)
        claims.setdefault(_key(path), ("input", path))
    for path, stem in zip(inputs, stems, strict=True):
        for ending in (*endings, *folders):
            claim(_named(stem, ending), "output", path)
    for key, path in (others or {}).items():
        claim(path, key, path)
    owners = {_key(_named(s, f)): p for s, p in zip(stems, inputs, strict=True) for f in folders}
    for key, (kind, whose) in claims.items():
        for parent in Path(key).parents:
            owner = owners.get(str(parent))
            if owner is not None and owner != whose:
                raise InputError(
                    f"{whose} ({kind}) would be in {parent}, the folder of the outputs of "
                    f"{owner}; {FIX_NAMES}, and run again (docs/inference.md#output-names)"
                )
    return OutputPlan(inputs, stems, out_root)


def check_writable(folder: Path, key: str = "output", fix: str = "a writable folder") -> None:
    """Creates ``folder`` and writes and removes a file in it: a folder the run cannot write
    stops it before the model is loaded, not after the first batch."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".seglab-write-check-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise InputError(
            f"cannot write to the {key} folder {folder} ({err.strerror or err}); pass {key}=<{fix}>"
        ) from None


def raise_if_unreadable(failed: list[tuple[Path, BaseException]], plan: OutputPlan) -> None:
    """Names every file that could not be read, then, if there is one, raises ``InputError``
    with how many of the inputs they were: called once the others' outputs are written, so
    that a run that skipped inputs never exits as if it were complete."""
    if not failed:
        return
    for path, err in failed:  # the readers' errors name the file; others may not
        text = str(err) or type(err).__name__
        log.error("%s", text if str(path) in text else f"could not read {path}: {text}")
    total, n = len(plan.inputs), len(failed)
    names = ", ".join(str(p) for p, _ in failed[:3]) + (f" and {n - 3} more" if n > 3 else "")
    done = (
        f"the outputs of the other {total - n} are in {plan.out_root}"
        if total > n
        else "nothing was written"
    )
    raise InputError(
        f"{n} of {total} images could not be read (listed above): {names}. Replace or remove "
        f"them and run again ({done})"
    )

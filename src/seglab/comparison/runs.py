"""Which runs ``src/compare.py`` compares: run folders and multirun folders, grouped into
configurations (a multirun's jobs that differ only in ``seed=``), the split to compare on,
and the per-image confusion matrices, checked to be over the same images.

A run folder is what ``src/train.py`` or ``src/eval.py`` leaves: ``metrics.json`` and
``per_image_<split>.npz`` (``confmat`` (N, C, C), ``index`` (N,), ``class_names`` (C,)). A
multirun folder holds numbered job folders ``0/``, ``1/``, ... each with
``.hydra/overrides.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from seglab.errors import InputError, MissingFileError
from seglab.per_image import load_per_image

SPLITS = ("val", "test")
SEED_KEYS = ("seed", "+seed", "++seed")


@dataclass
class Run:
    """One evaluated run: its folder, and its seed as the multirun set it (else None)."""

    path: Path
    seed: str | None = None


@dataclass
class Configuration:
    """Runs that differ only in their seed, shown as one row."""

    label: str
    runs: list[Run] = field(default_factory=list)


def per_image_file(run: Path, split: str) -> Path:
    return run / f"per_image_{split}.npz"


def _is_run(path: Path) -> bool:
    return (path / "metrics.json").is_file() or any(
        per_image_file(path, s).is_file() for s in SPLITS
    )


def _jobs(path: Path) -> list[Path]:
    """A multirun folder's job folders, in job order."""
    subs = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(subs, key=lambda p: int(p.name))


def _overrides(job: Path) -> list[str]:
    f = job / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return []
    return [str(o) for o in OmegaConf.load(f)]


def _split_seed(overrides: list[str]) -> tuple[list[str], str | None]:
    rest, seed = [], None
    for o in overrides:
        key, _, value = o.partition("=")
        if key in SEED_KEYS:
            seed = value
        else:
            rest.append(o)
    return rest, seed


def _sweep_configurations(path: Path, arg: str) -> list[Configuration]:
    """A multirun folder's jobs grouped by their overrides without ``seed=``, labelled by
    the overrides that differ between the groups (the folder as given when none do)."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for job in _jobs(path):
        rest, seed = _split_seed(_overrides(job))
        groups.setdefault(tuple(rest), []).append(Run(job, seed))
    keys = list(groups)
    shared = set(keys[0]).intersection(*keys[1:]) if keys else set()
    out = []
    for key, runs in groups.items():
        own = " ".join(o for o in key if o not in shared)
        out.append(Configuration(f"{arg} {own}" if own else arg, runs))
    return out


def find_configurations(args: Sequence[str], base: Path | None = None) -> list[Configuration]:
    """The configurations of ``runs=[...]``, in the order given: a run folder is one
    configuration, a multirun folder one per group of jobs that differ only in the seed.
    Relative paths are taken from the working directory, else from ``base`` (the
    repository)."""
    out: list[Configuration] = []
    for arg in args:
        path = Path(str(arg)).expanduser()
        if not path.exists() and base is not None and not path.is_absolute():
            path = base / path
        if not path.is_dir():
            raise MissingFileError(
                f"run folder {arg} does not exist ({path.resolve()}); give the folder of a "
                "src/train.py or src/eval.py run (the one holding metrics.json), e.g. "
                "runs=[outputs/2026-01-01/10-00-00-000000_1,outputs/...]"
            )
        if _is_run(path):
            out.append(Configuration(str(arg), [Run(path)]))
        elif _jobs(path):
            out += _sweep_configurations(path, str(arg))
        else:
            raise InputError(
                f"{arg} is neither a run folder (metrics.json, per_image_<split>.npz) nor a "
                "multirun folder (numbered job folders 0/, 1/, ...); give the folder of a "
                "src/train.py or src/eval.py run, or of a -m sweep"
            )
    labels = [c.label for c in out]
    for c in out:
        if labels.count(c.label) > 1:
            c.label += f" ({c.runs[0].path})"
    return out


def _no_per_image(run: Path, split: str) -> InputError:
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    ckpt = ckpts[0] if ckpts else run / "checkpoints" / "<best>.ckpt"
    return InputError(
        f"run {run} has no per-image confusion matrices for split {split!r} "
        f"({per_image_file(run, split).name}; it was evaluated before they were saved, or "
        f"with evaluation.per_image=false). Evaluate it again: python src/eval.py "
        f"ckpt_path={ckpt} split={split}, and compare that evaluation's run folder"
    )


def choose_split(configs: Sequence[Configuration], split: str) -> str:
    """``split``, or for ``auto``: test when every run has per-image results on it (held out:
    no run chose its checkpoint on it), else val when every run has them."""
    runs = [r.path for c in configs for r in c.runs]
    if split in SPLITS:
        for run in runs:
            if not per_image_file(run, split).is_file():
                raise _no_per_image(run, split)
        return split
    if split != "auto":
        raise InputError(f"split must be auto, val or test, got {split!r} (e.g. split=val)")
    for s in ("test", "val"):
        if all(per_image_file(r, s).is_file() for r in runs):
            return s
    have = {str(r): [s for s in SPLITS if per_image_file(r, s).is_file()] for r in runs}
    lacking = [r for r, s in have.items() if not s]
    if lacking:
        raise _no_per_image(Path(lacking[0]), "val")
    raise InputError(
        f"the runs have no split in common ({have}); evaluate them all on one split, e.g. "
        "python src/eval.py ckpt_path=<run>/checkpoints/<best>.ckpt split=val, and compare "
        "those evaluations' run folders"
    )


def read_per_image(path: Path) -> dict[str, Any]:
    """``per_image_<split>.npz`` -> ``confmat`` (N, C, C) int64, ``index`` (N,),
    ``class_names`` (list)."""
    try:
        data = load_per_image(path)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(
            f"cannot read {path} ({err}); it should hold confmat, index and class_names "
            "(written by src/train.py or src/eval.py): evaluate the run again"
        ) from err
    cm = np.asarray(data["confmat"], dtype=np.int64)
    if cm.ndim != 3 or cm.shape[1] != cm.shape[2] or cm.shape[0] == 0:
        raise InputError(
            f"{path}: confmat has shape {cm.shape}, not (images, C, C) with images > 0"
        )
    names = [str(n) for n in data["class_names"]]
    return {"confmat": cm, "index": np.asarray(data["index"]), "class_names": names}


def check_same_images(named: dict[str, dict[str, Any]]) -> None:
    """Raises an ``InputError`` unless every run was evaluated on the same images: the same
    class names, image indices and per-image label pixel counts (the confusion matrices' row
    sums, which depend on the labels only)."""
    fix = (
        "evaluate every run on the same split with the same data settings (data.val_subset, "
        "eval transforms, data.root), e.g. python src/eval.py ckpt_path=... split=val, and "
        "compare those evaluations"
    )
    (ref, a), *rest = named.items()
    for name, b in rest:
        why = None
        if a["class_names"] != b["class_names"]:
            why = f"classes {a['class_names']} vs {b['class_names']}"
        elif a["confmat"].shape[0] != b["confmat"].shape[0]:
            why = f"{a['confmat'].shape[0]} vs {b['confmat'].shape[0]} images"
        elif not np.array_equal(a["index"], b["index"]):
            why = "different image indices"
        else:
            rows_a, rows_b = a["confmat"].sum(axis=2), b["confmat"].sum(axis=2)
            bad = np.flatnonzero((rows_a != rows_b).any(axis=1))
            if bad.size:
                why = f"different label pixels (first at image index {a['index'][bad[0]]})"
        if why:
            raise InputError(f"{ref} and {name} were evaluated on different images ({why}); {fix}")


def load_runs(configs: Sequence[Configuration], split: str) -> dict[Path, dict[str, Any]]:
    """Every run's per-image results on ``split``, checked against its metrics.json (when
    that holds the split's confusion matrix) and against each other (same images)."""
    out: dict[Path, dict[str, Any]] = {}
    for c in configs:
        for run in c.runs:
            data = read_per_image(per_image_file(run.path, split))
            metrics = run.path / "metrics.json"
            saved = json.loads(metrics.read_text()) if metrics.is_file() else {}
            summed = saved.get(f"{split}/confusion_matrix")
            if summed is not None and not np.array_equal(
                np.asarray(summed), data["confmat"].sum(0)
            ):
                raise InputError(
                    f"{per_image_file(run.path, split)} does not add up to the confusion matrix "
                    f"in {metrics} (written by another evaluation?); evaluate the run again"
                )
            out[run.path] = data
    check_same_images({str(p): d for p, d in out.items()})
    return out

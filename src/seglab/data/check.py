"""``python src/check_data.py data=<name> data.root=<folder>``: reads a whole dataset and
reports every problem at once, instead of training stopping at the first bad file.

For each configured split (train / val / test) the dataset is built as training builds it,
but with ``data.on_bad_sample=skip`` so that unpaired files (an image without a mask, a mask
without an image) are listed one by one, and every sample is loaded without augmentation
(the dataset's ``load(i)``). A sample whose loading raises (a corrupt or truncated image, a
mask of another size, a label value or colour not in the class table, ...) is a problem, its
message naming the file; so is a label value that is neither a class id nor
``ignore_index``, a split that cannot be built, and an empty split. Per split it also reports
the number of images, the range of image sizes and the label values seen.

Folder data (``data=folder``) is first scanned for its label convention
(``seglab.data.conventions``): the layout and the convention found are printed (and are
``labels`` in the report); a config that does not read the masks is the one problem reported,
with the overrides that fit, and the samples are not read.

The summary is printed as rich tables and written to ``check_data.json`` in the run folder;
``check_data`` returns the report and the script exits with status 1 when ``problems`` is
not empty.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, open_dict
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch.utils.data import DataLoader, Dataset

from seglab.config import build
from seglab.data.bad_samples import BAD_FILE_ERRORS
from seglab.data.conventions import check_labels
from seglab.data.datamodule import worker_init
from seglab.data.subsets import sample_file

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class _Probe(Dataset):
    """Loads sample ``i`` and returns what the check needs (not the pixels): ``(i, size,
    label values, problem)``; loading errors are returned, never raised."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[int, tuple[int, int] | None, Any, str | None]:
        try:
            image, label = self.dataset.load(i)
        except BAD_FILE_ERRORS as e:  # a bad file: the message names it
            return i, None, None, str(e)
        except Exception as e:  # anything else is reported too, with its type
            return i, None, None, f"{type(e).__name__}: {e}"
        image, label = np.asarray(image), np.asarray(label)
        size = (int(image.shape[0]), int(image.shape[1])) if image.ndim >= 2 else None
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            return i, size, None, f"image is {image.dtype} {image.shape}, not uint8 HxWx3"
        if label.shape != image.shape[:2]:
            return i, size, None, f"label map is {label.shape} but the image is {size}"
        return i, size, np.unique(label), None


def _first(item: Any) -> Any:
    return item


def _check_split(
    dm: Any, split: str, workers: int, progress: Progress
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The summary of one split and its problems."""
    own = dm.splits.get(split)
    summary: dict[str, Any] = {"name": own}
    problems: list[dict[str, Any]] = []

    def problem(file: str | None, text: str) -> None:
        problems.append({"split": split, "file": file, "problem": text})

    try:
        ds = dm.factory(split=own, transform=None)
    except Exception as e:  # the split cannot be built at all
        problem(None, str(e) if isinstance(e, ValueError | OSError) else f"{type(e).__name__}: {e}")
        summary.update(images=0, problems=len(problems))
        return summary, problems
    for file, text in getattr(ds, "dropped", ()):
        problem(file, text)
    summary["images"] = len(ds)
    if len(ds) == 0:
        problem(None, f"the {split} split ({own!r}) is empty")

    allowed = set(range(dm.num_classes)) | {dm.ignore_index}
    values: set[int] = set()
    sizes: list[tuple[int, int]] = []
    loader = DataLoader(
        _Probe(ds),
        batch_size=None,
        collate_fn=_first,
        num_workers=workers,
        worker_init_fn=worker_init if workers else None,
        multiprocessing_context="fork" if workers else None,
    )
    task = progress.add_task(f"checking {split}", total=len(ds))
    for i, size, labels, text in loader:
        progress.advance(task)
        file = sample_file(ds, i)
        if size is not None:
            sizes.append(size)
        if text is not None:
            problem(file, text)
            continue
        found = {int(v) for v in labels.tolist()}
        values |= found
        if found - allowed:
            problem(
                file or f"sample {i}",
                f"label value(s) {sorted(found - allowed)[:10]} are neither a class id "
                f"(0-{dm.num_classes - 1}) nor ignore_index ({dm.ignore_index})",
            )
    if sizes:
        hs, ws = [s[0] for s in sizes], [s[1] for s in sizes]
        summary["min_size_hw"], summary["max_size_hw"] = [min(hs), min(ws)], [max(hs), max(ws)]
    summary["label_values"] = sorted(values)
    summary["problems"] = len(problems)
    return summary, problems


def _label_text(values: list[int], class_names: list[str], ignore_index: int) -> str:
    def name(v: int) -> str:
        if v == ignore_index:
            return f"{v} ignore"
        return f"{v} {class_names[v]}" if 0 <= v < len(class_names) else f"{v} ?"

    shown = ", ".join(name(v) for v in values[:12])
    return shown + (f", ... ({len(values)} values)" if len(values) > 12 else "")


def print_report(
    report: dict[str, Any], class_names: list[str], ignore_index: int, listed: int
) -> None:
    console = Console()
    table = Table(title=f"data '{report['data']}' at {report['root']}")
    for col in ("split", "images", "sizes (HxW)", "label values", "problems"):
        table.add_column(col, justify="right" if col in ("images", "problems") else "left")
    for split, s in report["splits"].items():
        if s.get("name") is None:
            table.add_row(split, "-", "not configured", "", "")
            continue
        sizes = ""
        if "min_size_hw" in s:
            lo, hi = s["min_size_hw"], s["max_size_hw"]
            sizes = f"{lo[0]}x{lo[1]}" + ("" if lo == hi else f" .. {hi[0]}x{hi[1]}")
        labels = _label_text(s.get("label_values", []), class_names, ignore_index)
        table.add_row(
            f"{split} ({s['name']})", str(s.get("images", 0)), sizes, labels, str(s["problems"])
        )
    console.print(table)
    problems = report["problems"]
    if not problems:
        console.print("[green]no problems found[/green]")
        return
    ptable = Table(title=f"{len(problems)} problem(s)", show_lines=False)
    ptable.add_column("split")
    ptable.add_column("file")
    ptable.add_column("problem", overflow="fold")
    for p in problems[:listed]:
        ptable.add_row(p["split"], p["file"] or "", p["problem"])
    console.print(ptable)
    if len(problems) > listed:
        console.print(f"... and {len(problems) - listed} more: see {report['json']}")


def print_labels(labels: dict[str, Any]) -> None:
    """The layout and label convention of folder data (a mismatch is logged as an error)."""
    console = Console(soft_wrap=True)
    console.print(f"layout: {labels['layout']}", markup=False)
    console.print(f"labels: {labels['finding']}", markup=False)
    if not labels["problem"]:
        console.print(
            f"read with data.dataset.mask_format={labels['mask_format']} "
            f"data.num_classes={labels['num_classes']}",
            markup=False,
        )


def check_data(cfg: DictConfig) -> dict[str, Any]:
    """Checks every configured split of ``cfg.data`` (see the module docstring); returns the
    report (also written to ``<run folder>/check_data.json``)."""
    check = cfg.get("check") or {}
    with open_dict(cfg):  # unpaired files are then listed one by one, not the first only
        cfg.data.on_bad_sample = "skip"
    labels = check_labels(cfg)  # folder data: the masks' convention (infers num_classes=null)
    if labels is not None:
        print_labels(labels)
    if labels is not None and labels["problem"]:
        return _label_mismatch(cfg, labels)
    dm = build(cfg.data)
    workers = check.get("num_workers")
    workers = int(cfg.data.get("num_workers", 0) if workers is None else workers)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "data": dm.name,
        "root": dm.root,
        "json": str(out_dir / "check_data.json"),
        "splits": {},
        "problems": [],
        "labels": labels,
    }
    with Progress(disable=not check.get("progress", True), transient=True) as progress:
        for split in check.get("splits", SPLITS):
            if dm.splits.get(split) is None:
                report["splits"][split] = {"name": None}
                continue
            summary, problems = _check_split(dm, split, workers, progress)
            report["splits"][split] = summary
            report["problems"] += problems
    report["ok"] = not report["problems"]
    Path(report["json"]).write_text(json.dumps(report, indent=2) + "\n")
    print_report(report, dm.class_names, dm.ignore_index, int(check.get("max_listed", 50)))
    for p in report["problems"]:
        file, text = p["file"], p["problem"]
        log.error(
            "%s split: %s", p["split"], text if not file or file in text else f"{file}: {text}"
        )
    log.info("%d problem(s) found; report written to %s", len(report["problems"]), report["json"])
    return report


def _label_mismatch(cfg: DictConfig, labels: dict[str, Any]) -> dict[str, Any]:
    """The report when the config does not read the masks: that one problem (every sample
    would fail the same way), written to ``check_data.json``."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "data": cfg.data.name,
        "root": cfg.data.get("root"),
        "json": str(out_dir / "check_data.json"),
        "splits": {},
        "problems": [{"split": "all", "file": None, "problem": labels["problem"]}],
        "labels": labels,
        "ok": False,
    }
    Path(report["json"]).write_text(json.dumps(report, indent=2) + "\n")
    log.error("%s", labels["problem"])
    return report

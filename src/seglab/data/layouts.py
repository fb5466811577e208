"""Where a folder dataset's images and masks are: the layouts ``data=folder`` reads.

Looked for under ``data.root`` in this order, the first that is there for the split wins:

1. **split folders**: ``images/<split>/`` and ``masks/<split>/``;
2. **split lists**: ``splits/<split>.txt`` naming images (one a line, without or with the
   suffix), all images in ``images/``, all masks in ``masks/``;
3. **VOC-like**: ``JPEGImages/`` and ``SegmentationClass/``, with the split lists
   ``ImageSets/Segmentation/<split>.txt`` (or, without that folder, a seeded split as 4.);
4. **flat**: ``images/`` and ``masks/`` and no split lists: a seeded random split into
   ``train`` and ``val`` (``val_fraction`` of the images to val).

A root with split folders (``images/train/`` ...) or a ``splits/`` folder but not the split
asked for is an error, never read as flat. The seeded split orders the image names by a hash
of the seed and the name (``file_pairs.seeded_order``): the same on every machine, run and
library version; ``freeze_split`` writes it to split lists so that it never changes again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from seglab.data.file_pairs import (
    list_files,
    mask_files,
    match_masks,
    pair_files,
    read_split_list,
    seeded_order,
    unclaimed_masks,
    write_split_list,
)
from seglab.errors import InputError, MissingFileError

log = logging.getLogger(__name__)

SPLIT_FOLDERS, SPLIT_LISTS, VOC_LIKE, FLAT = "split folders", "split lists", "VOC-like", "flat"
SEEDED_SPLITS = ("train", "val")  # what a seeded split makes
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = (".png", "_mask.png", "_label.png")
VOC_LISTS = Path("ImageSets") / "Segmentation"
_logged: set[str] = set()  # what was logged already (each split's dataset finds the layout)


def log_once(message: str) -> None:
    """Logs ``message`` once per process: train and val find the same layout."""
    if message not in _logged:
        _logged.add(message)
        log.info("%s", message)


@dataclass(frozen=True)
class Layout:
    """One split's place in a root: ``images`` and ``masks`` hold its files (with others when
    ``list_file`` names them, or when the split is ``seeded``); every mask of the dataset is
    under ``masks_root`` (what the label scan reads)."""

    kind: str
    root: Path
    images: Path
    masks: Path
    masks_root: Path
    list_file: Path | None = None
    seeded: bool = False

    def describe(self) -> str:
        """The layout in words, for the log: which folders, where the splits come from."""
        if self.kind == SPLIT_FOLDERS:
            return f"{self.kind} (images/<split>/ + masks/<split>/)"
        folders = f"{self.images.name}/ + {self.masks.name}/"
        if self.seeded:
            return f"{self.kind} ({folders}, no split lists: a seeded train/val split)"
        lists = self.list_file.parent.relative_to(self.root).as_posix()  # type: ignore[union-attr]
        return f"{self.kind} ({folders}, {lists}/<split>.txt)"


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _looked_for(root: Path, split: str) -> str:
    """What was looked for (the detection order) and what the root holds."""
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    shown = ", ".join(held[:12]) + (f", ... ({len(held)} entries)" if len(held) > 12 else "")
    return (
        f"folder: no layout data=folder reads is in {root} for the {split} split. Looked for, "
        f"in this order: (1) split folders images/{split}/ + masks/{split}/; (2) split lists "
        f"splits/{split}.txt + images/ + masks/; (3) VOC-like JPEGImages/ + "
        f"SegmentationClass/ (+ {VOC_LISTS.as_posix()}/{split}.txt); (4) flat images/ + "
        f"masks/ (a seeded train/val split). {root} holds: {shown or 'nothing'}. Set "
        "data.root=<the folder holding them> (docs/datasets.md, 'Your own data')"
    )


def detect_layout(root: str | Path, split: str) -> Layout:
    """The layout of ``split`` under ``root`` (see the module docstring for the order)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MissingFileError(
            f"folder: data.root {root} does not exist; set data.root=<the folder holding "
            "images/ and masks/>"
        )
    images, masks = root / "images", root / "masks"
    if (images / split).is_dir():
        return Layout(SPLIT_FOLDERS, root, images / split, masks / split, masks)
    split_list = root / "splits" / f"{split}.txt"
    if split_list.is_file():
        return Layout(SPLIT_LISTS, root, images, masks, masks, list_file=split_list)
    have = [s for s in _subfolders(images) if s in ("train", "val", "test")]
    if have or (root / "splits").is_dir():
        found = ", ".join(f"images/{s}/" for s in have) or "a splits/ folder"
        raise MissingFileError(
            f"folder: no {split} split in {root}: it has {found} but no images/{split}/ (nor "
            f"splits/{split}.txt); add it, or leave the {split} split out "
            f"(data.splits.{split if split in ('train', 'val', 'test') else 'test'}=null)"
        )
    voc_images, voc_masks = root / "JPEGImages", root / "SegmentationClass"
    if voc_images.is_dir() and voc_masks.is_dir():
        lists = root / VOC_LISTS
        if lists.is_dir():
            if not (lists / f"{split}.txt").is_file():
                raise MissingFileError(
                    f"folder: no {split} split in {root}: {lists} has no {split}.txt (it has "
                    f"{sorted(p.name for p in lists.glob('*.txt'))})"
                )
            return Layout(VOC_LIKE, root, voc_images, voc_masks, voc_masks, lists / f"{split}.txt")
        return Layout(VOC_LIKE, root, voc_images, voc_masks, voc_masks, seeded=True)
    if images.is_dir() and masks.is_dir():
        return Layout(FLAT, root, images, masks, masks, seeded=True)
    raise MissingFileError(_looked_for(root, split))


def seeded_split(keys: Sequence[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """``{"train": [...], "val": [...]}``: ``round(n * val_fraction)`` of the names to val
    (at least 1 and at most n - 1 when n >= 2), chosen by ``seeded_order``; each part in name
    order."""
    order = seeded_order(keys, seed)
    n = len(order)
    n_val = min(n - 1, max(1, round(n * val_fraction))) if n >= 2 else 0
    val = set(order[:n_val])
    names = sorted(order)
    return {"train": [k for k in names if k not in val], "val": [k for k in names if k in val]}


def _list_keys(list_file: Path, image_suffixes: Sequence[str]) -> list[str]:
    """The image names a split list holds, a suffix (when written) dropped."""
    keys = []
    for name in read_split_list(list_file):
        low = name.lower()
        suffix = next((s for s in image_suffixes if low.endswith(s.lower())), "")
        keys.append(name[: len(name) - len(suffix)] if suffix else name)
    if not keys:
        raise InputError(f"folder: {list_file} lists no images: an empty split")
    return keys


def _seeded_pairs(
    layout: Layout,
    split: str,
    image_suffixes: Sequence[str],
    mask_suffixes: Sequence[str],
    val_fraction: float,
    seed: int,
    dropped: list[tuple[str, str]] | None,
) -> list[tuple[Path, Path]]:
    """The pairs of ``split`` of a seeded split of every image (paired or not, so a missing
    mask never moves another image to the other split)."""
    if split not in SEEDED_SPLITS:
        raise MissingFileError(
            f"folder: {layout.root} has no split lists, so its images are split into train and "
            f"val only (seeded), not {split!r}: for a {split} split write split lists "
            f"(splits/train.txt, splits/val.txt, splits/{split}.txt; see freeze_split), or "
            f"leave it out (data.splits.{split if split == 'test' else '<name>'}=null)"
        )
    images = list_files(layout.images, image_suffixes)
    if not images:
        raise InputError(
            f"{layout.images} holds no images (files ending in one of {list(image_suffixes)})"
        )
    parts = seeded_split(list(images), val_fraction, seed)
    pairs = pair_files(
        layout.images, layout.masks, image_suffixes, mask_suffixes, parts[split], dropped
    )
    if split == "train":  # masks that no image of either split claims, reported once
        table = mask_files(layout.masks, mask_suffixes)
        extra = match_masks(images, table, mask_suffixes)[2]
        problems = unclaimed_masks(
            extra, layout.images, layout.masks, image_suffixes, mask_suffixes, dropped
        )
        for file, problem in problems:
            log.warning("left out %s: %s", file, problem)
        if dropped is not None:
            dropped += problems
    lists = "splits/" if layout.kind == FLAT else f"{VOC_LISTS.as_posix()}/"
    log_once(
        f"folder: no split lists in {layout.root}: {len(parts['train'])} train / "
        f"{len(parts['val'])} val images, split with seed {seed} "
        f"(data.dataset.split_seed, data.dataset.val_fraction={val_fraction:g}); to keep this "
        f"split fixed, write it to {lists}train.txt and val.txt with "
        f'`python -c "from seglab.data.layouts import freeze_split; '
        f"freeze_split('{layout.root}', {val_fraction:g}, {seed})\"`"
    )
    return pairs


def split_pairs(
    layout: Layout,
    split: str,
    image_suffixes: Sequence[str] = IMAGE_SUFFIXES,
    mask_suffixes: Sequence[str] = MASK_SUFFIXES,
    val_fraction: float = 0.2,
    seed: int = 0,
    dropped: list[tuple[str, str]] | None = None,
) -> list[tuple[Path, Path]]:
    """The (image, mask) pairs of ``split`` in ``layout``; unpaired files stop the build,
    or with ``dropped`` given are collected there and left out (see ``pair_files``)."""
    if layout.seeded:
        return _seeded_pairs(
            layout, split, image_suffixes, mask_suffixes, val_fraction, seed, dropped
        )
    keys = None if layout.list_file is None else _list_keys(layout.list_file, image_suffixes)
    return pair_files(layout.images, layout.masks, image_suffixes, mask_suffixes, keys, dropped)


def freeze_split(
    root: str | Path,
    val_fraction: float = 0.2,
    seed: int = 0,
    image_suffixes: Sequence[str] = IMAGE_SUFFIXES,
) -> dict[str, Path]:
    """Writes the seeded split of a flat (or VOC-like without lists) root to split lists
    (``splits/train.txt`` and ``val.txt``, or ``ImageSets/Segmentation/``), which the
    layout detection then finds first: the split stays as it is when images are added."""
    layout = detect_layout(root, "train")
    if not layout.seeded:
        raise InputError(f"folder: {layout.root} is already split ({layout.describe()})")
    parts = seeded_split(list(list_files(layout.images, image_suffixes)), val_fraction, seed)
    folder = layout.root / ("splits" if layout.kind == FLAT else VOC_LISTS)
    written = {}
    for split, keys in parts.items():
        written[split] = folder / f"{split}.txt"
        write_split_list(written[split], keys)
    log.info("wrote %s", ", ".join(map(str, written.values())))
    return written


def all_masks(layout: Layout, mask_suffixes: Sequence[str] = MASK_SUFFIXES) -> list[Path]:
    """Every mask of the dataset (of every split): what the label scan reads."""
    return list(mask_files(layout.masks_root, mask_suffixes).values())

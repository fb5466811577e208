"""MSRC-v2 (MSRC-21) read from Microsoft's own distribution: the zip or its extracted folder.

``MSRC_ObjCategImageDatabase_v2/Images/<id>.bmp`` are the photographs and
``GroundTruth/<id>_GT.bmp`` their colour-coded labels; where the publisher made a finer label
(``SegmentationsGTHighQuality/<id>_HQGT.bmp``) it replaces the coarse one. Splits are the
TextonBoost lists (``Train.txt``, ``Validation.txt``, ``Test.txt``, one image file name per
line, CRLF): they are not in Microsoft's zip and seglab does not ship them (nothing derived
from the data is in the repository), so they are looked up next to the data; the split name
is the list's file stem, so a list of your own (``Mine.txt``) is a split too.

``root`` may be the folder that holds ``MSRC_ObjCategImageDatabase_v2/``, that folder itself,
the zip ``MSRC_ObjCategImageDatabase_v2.zip`` or the folder that holds the zip. A zip is
extracted once, into ``cache_dir`` when given, else ``<zip's folder>/extracted`` when that
folder is writable, else ``fallback_cache_dir`` (the data config sets it to
``${paths.data_dir}/extracted``). Extraction goes to a temporary folder renamed into place,
so processes that start together (DDP ranks, dataloader workers, parallel runs) never see a
half-extracted copy: the first rename wins and the others use its result.

Which classes are learnt is the data config's ``class_names``: each is one of the publisher's
23 class names (its colour legend, ``ClickMe.html``) or ``void``. Publisher classes left out
(MSRC-21 leaves out horse and mountain, which have almost no examples) and void pixels become
the ``void`` class when ``class_names`` has one (the 22-output ``msrc22`` variant), else
``ignore_index``. A GT colour outside the legend is an error, never a silent class.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seglab.data.base import SegmentationDataset
from seglab.data.file_pairs import read_split_list
from seglab.data.label_tables import colours_to_labels, compact
from seglab.data.readers import check_same_size, read_rgb
from seglab.errors import InputError, MissingFileError

log = logging.getLogger(__name__)

DB_NAME = "MSRC_ObjCategImageDatabase_v2"
ZIP_NAME = f"{DB_NAME}.zip"
# The publisher's legend (ClickMe.html, "3. Legend"), in its order: void and 23 classes.
COLOURS: dict[str, tuple[int, int, int]] = {
    "void": (0, 0, 0),
    "building": (128, 0, 0),
    "grass": (0, 128, 0),
    "tree": (128, 128, 0),
    "cow": (0, 0, 128),
    "horse": (128, 0, 128),
    "sheep": (0, 128, 128),
    "sky": (128, 128, 128),
    "mountain": (64, 0, 0),
    "aeroplane": (192, 0, 0),
    "water": (64, 128, 0),
    "face": (192, 128, 0),
    "car": (64, 0, 128),
    "bicycle": (192, 0, 128),
    "flower": (64, 128, 128),
    "sign": (192, 128, 128),
    "bird": (0, 64, 0),
    "book": (128, 64, 0),
    "chair": (0, 192, 0),
    "road": (128, 64, 128),
    "cat": (0, 192, 128),
    "dog": (128, 192, 128),
    "body": (64, 64, 0),
    "boat": (192, 64, 0),
}
# The standard 21-class protocol: all but void, horse and mountain, in the legend's order.
MSRC21 = tuple(n for n in COLOURS if n not in ("void", "horse", "mountain"))
LIST_HELP = (
    "The TextonBoost split lists (Train.txt, Validation.txt, Test.txt; Shotton et al., ECCV "
    "2006) are not in Microsoft's zip and are not shipped with seglab: put them in the folder "
    f"given as data.root (next to the zip or the {DB_NAME} folder), or set "
    "data.dataset.split_dir=<folder that holds them>."
)


def label_table(class_names: Sequence[str], ignore_index: int) -> dict[tuple[int, int, int], int]:
    """{GT colour: training id} for ``class_names`` (publisher names and/or ``void``)."""
    names = list(class_names)
    unknown = [n for n in names if n not in COLOURS]
    if unknown or len(set(names)) != len(names):
        raise InputError(
            f"MSRC class_names {names}: each must appear once and be one of {list(COLOURS)}"
            + (f"; unknown: {unknown}" if unknown else "")
        )
    other = names.index("void") if "void" in names else ignore_index
    return {c: names.index(n) if n in names else other for n, c in COLOURS.items()}


def extract_once(zip_path: Path, cache_base: Path) -> Path:
    """Extracts ``zip_path`` under ``cache_base`` unless done before; returns the folder.

    The folder name carries the zip's name, size and modification time, so a changed zip is
    extracted afresh. Safe when several processes start at once (see the module docstring)."""
    st = zip_path.stat()
    key = hashlib.sha1(f"{zip_path.name}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    target = cache_base / f"{zip_path.stem}-{key[:10]}"
    if target.is_dir():
        return target
    cache_base.mkdir(parents=True, exist_ok=True)
    log.info("extracting %s into %s (once)", zip_path, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{zip_path.stem}-", dir=cache_base))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)
        except zipfile.BadZipFile as e:
            raise InputError(f"cannot read zip {zip_path}: {e}") from e
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not another process finishing first: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _is_db(folder: Path) -> bool:
    return (folder / "Images").is_dir() and (folder / "GroundTruth").is_dir()


def locate(
    root: str | Path,
    cache_dir: str | Path | None = None,
    fallback_cache_dir: str | Path | None = None,
) -> tuple[Path, list[Path]]:
    """The database folder (holding ``Images/``) for ``root``, extracting a zip if that is
    what ``root`` is or holds, and the folders where split lists are looked for."""
    path = Path(root).expanduser()
    if path.is_file() and path.suffix.lower() == ".zip":
        zip_path, base = path, path.parent
    elif _is_db(path):
        return path, [path, path.parent]
    elif _is_db(path / DB_NAME):
        return path / DB_NAME, [path, path / DB_NAME]
    elif (path / ZIP_NAME).is_file():
        zip_path, base = path / ZIP_NAME, path
    elif not path.exists():
        raise MissingFileError(
            f"MSRC: data.root {path} does not exist; point it at the folder holding "
            f"{DB_NAME}/ or {ZIP_NAME} (and the split lists)"
        )
    else:
        raise MissingFileError(
            f"MSRC: found neither {DB_NAME}/Images nor {ZIP_NAME} in {path}; point data.root "
            "at the folder that holds one of them"
        )
    if cache_dir is not None:
        cache = Path(cache_dir).expanduser()
    elif os.access(base, os.W_OK):
        cache = base / "extracted"
    elif fallback_cache_dir is not None:
        cache = Path(fallback_cache_dir).expanduser()
    else:
        raise PermissionError(
            f"MSRC: {base} is read-only; set data.dataset.cache_dir to a writable folder "
            f"to extract {zip_path.name} into"
        )
    out = extract_once(zip_path, cache)
    db = out / DB_NAME if _is_db(out / DB_NAME) else out
    if not _is_db(db):
        raise InputError(f"MSRC: {zip_path} does not hold {DB_NAME}/Images and GroundTruth")
    return db, [base, db]


class MSRCDataset(SegmentationDataset):
    """MSRC-v2 images with their (high-quality where available) colour-coded ground truth."""

    def __init__(
        self,
        root: str,
        split: str = "Train",
        class_names: Sequence[str] = MSRC21,
        ignore_index: int = 255,
        split_dir: str | None = None,
        cache_dir: str | None = None,
        fallback_cache_dir: str | None = None,
        on_bad_sample: str = "error",
        transform=None,
    ) -> None:
        super().__init__(transform)
        self.table = label_table(class_names, ignore_index)
        self.db, list_dirs = locate(root, cache_dir, fallback_cache_dir)
        if split_dir is not None:
            list_dirs = [Path(split_dir).expanduser()]
        list_dirs += [d / "TextonBoostSplits" for d in list_dirs]
        found = [d / f"{split}.txt" for d in list_dirs if (d / f"{split}.txt").is_file()]
        if not found:
            raise MissingFileError(
                f"MSRC: split list {split}.txt not found in {[str(d) for d in list_dirs]}. "
                + LIST_HELP
            )
        self.split, self.list_file = split, found[0]
        self.samples: list[tuple[Path, Path]] = []
        # (file, problem) of the samples left out (on_bad_sample=skip: a missing file).
        self.dropped: list[tuple[str, str]] = []
        missing: list[str] = []  # one entry per incomplete sample: its first missing file
        for name in read_split_list(self.list_file):
            stem = Path(name).stem
            image = self.db / "Images" / name
            gt = self.db / "SegmentationsGTHighQuality" / f"{stem}_HQGT.bmp"
            if not gt.is_file():
                gt = self.db / "GroundTruth" / f"{stem}_GT.bmp"
            absent = [str(p) for p in (image, gt) if not p.is_file()][:1]
            if absent and on_bad_sample == "skip":
                log.warning("left out %s: listed in %s but missing", absent[0], self.list_file)
                self.dropped.append((absent[0], f"listed in {self.list_file} but missing"))
                continue
            missing += absent
            self.samples.append((image, gt))
        if missing:
            raise MissingFileError(
                f"MSRC: {len(missing)} of the {len(self.samples)} images listed in "
                f"{self.list_file} lack their image or GT file, e.g. {missing[:3]}. If your "
                "copy has no images of this split (the TextonBoost test images are often "
                "withheld), leave the split out, e.g. data.splits.test=null"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image_path, gt_path = self.samples[index]
        image = read_rgb(image_path)
        gt = read_rgb(gt_path)
        check_same_size(image, gt, image_path, gt_path)
        return image, compact(colours_to_labels(gt, self.table, gt_path))

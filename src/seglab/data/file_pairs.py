"""Finding a split's files: images paired with their masks by name, split lists, and a
seeded order of names that does not depend on any random generator's version.

An image's mask has the image's name without its suffix plus one of the mask suffixes, tried
in order (``a.jpg`` -> ``a.png``, ``a_mask.png``, ...): the first that names a file is the
mask. Unpaired files (an image without a mask, a mask without an image) stop the build with
the file named, or with ``data.on_bad_sample=skip`` are left out with a warning and collected.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from seglab.errors import InputError, MissingFileError

log = logging.getLogger(__name__)


def read_split_list(path: Path) -> list[str]:
    """The names a split list holds, one a line (CRLF or LF lines; blank lines skipped)."""
    names = [line.strip() for line in path.read_text().splitlines()]
    return [n for n in names if n]


def write_split_list(path: Path, names: Iterable[str]) -> None:
    """Writes ``names`` one a line (what ``read_split_list`` reads back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))


def seeded_order(names: Iterable[str], seed: int) -> list[str]:
    """``names`` (deduplicated) in a fixed pseudo-random order given by ``seed``: sorted by
    the SHA-256 of ``seed`` and the name. Unlike a NumPy permutation it is the same on every
    machine and library version, and names keep their order among themselves when others
    are added."""

    def key(name: str) -> bytes:
        return hashlib.sha256(f"{seed}\0{name}".encode()).digest()

    return sorted(sorted(set(names)), key=key)


def list_files(folder: str | Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """{path relative to ``folder`` without the suffix: file} for the files under ``folder``
    (recursively) whose names end with one of ``suffixes`` (any case). Hidden files are
    skipped; two files with the same key (``a.jpg`` and ``a.png``) are an error."""
    folder = Path(folder)
    lowered = [s.lower() for s in suffixes]
    out: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        name = path.name.lower()
        if name.startswith(".") or not path.is_file():
            continue
        suffix = next((s for s in lowered if name.endswith(s)), None)
        if suffix is None:
            continue
        rel = path.relative_to(folder).as_posix()
        key = rel[: len(rel) - len(suffix)]
        if key in out:
            raise InputError(f"{out[key]} and {path} have the same name; keep only one")
        out[key] = path
    return out


def mask_files(folder: str | Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """{relative path, lower case: file} for the files under ``folder`` whose names end with
    one of ``suffixes`` (any case; hidden files skipped)."""
    folder = Path(folder)
    lowered = [s.lower() for s in suffixes]
    out: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        name = path.name.lower()
        if not name.startswith(".") and path.is_file() and any(map(name.endswith, lowered)):
            out[path.relative_to(folder).as_posix().lower()] = path
    return out


def match_masks(
    images: dict[str, Path], masks: dict[str, Path], suffixes: Sequence[str]
) -> tuple[dict[str, Path], list[str], list[Path]]:
    """Pairs image keys with masks (``mask_files``' table): ``({key: mask}, keys without a
    mask, masks no image claimed)``; each key takes the first suffix that names a mask."""
    found: dict[str, Path] = {}
    for key in images:
        for suffix in suffixes:
            mask = masks.get((key + suffix).lower())
            if mask is not None:
                found[key] = mask
                break
    claimed = set(found.values())
    no_mask = [k for k in images if k not in found]
    return found, no_mask, [m for m in masks.values() if m not in claimed]


def _expected(mask_dir: Path, key: str, suffixes: Sequence[str]) -> str:
    more = f" (or {', '.join(suffixes[1:])})" if len(suffixes) > 1 else ""
    return f"{mask_dir / (key + suffixes[0])}{more}"


def _stem(mask: Path, mask_dir: Path, suffixes: Sequence[str]) -> str:
    """A mask's path relative to ``mask_dir`` less its longest matching mask suffix."""
    rel = mask.relative_to(mask_dir).as_posix()
    cut = max((len(s) for s in suffixes if rel.lower().endswith(s.lower())), default=0)
    return rel[: len(rel) - cut]


def unclaimed_masks(
    extra: Sequence[Path],
    image_dir: Path,
    mask_dir: Path,
    image_suffixes: Sequence[str],
    suffixes: Sequence[str],
    dropped: list[tuple[str, str]] | None,
) -> list[tuple[str, str]]:
    """Masks no image claimed: an error naming the first, or (``dropped`` given) the
    ``(file, problem)`` entries to leave them out with."""
    if extra and dropped is None:
        raise InputError(
            f"{len(extra)} masks have no image, e.g. {extra[0]}: expected an image "
            f"{image_dir / _stem(extra[0], mask_dir, suffixes)}<one of {list(image_suffixes)}>"
            "; add the images, or leave such masks out with data.on_bad_sample=skip"
        )
    return [(str(m), "mask without an image") for m in extra]


def pair_files(
    image_dir: str | Path,
    mask_dir: str | Path,
    image_suffixes: Sequence[str],
    mask_suffix: str | Sequence[str],
    keys: Sequence[str] | None = None,
    dropped: list[tuple[str, str]] | None = None,
    extra_masks: bool = True,
) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by name: the mask of ``<dir>/a.jpg`` is
    ``<mask_dir>/a<suffix>`` for the first of the mask suffixes that names a file. Every
    image needs a mask; with ``keys`` (a split list) only those images are taken, otherwise a
    mask without an image is an error too (a mislabelled or misplaced file is found now, not
    after training), unless ``extra_masks`` is false. A folder without any image is an error
    as well.

    ``dropped``: a list to collect ``(file, problem)`` of unpaired files in, instead of
    stopping at them (``data.on_bad_sample=skip``): they are left out with a warning."""
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    suffixes = [mask_suffix] if isinstance(mask_suffix, str) else list(mask_suffix)
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise MissingFileError(f"folder {d} does not exist")
    images = list_files(image_dir, image_suffixes)
    if not images and keys is None:
        raise InputError(
            f"{image_dir} holds no images (files ending in one of {list(image_suffixes)}): "
            "an empty split; put the images there or leave the split out"
        )
    problems: list[tuple[str, str]] = []  # (file, what is wrong), for `dropped`
    if keys is not None:
        absent = [k for k in keys if k not in images]
        if absent and dropped is None:
            raise MissingFileError(
                f"{len(absent)} listed images are not in {image_dir} (with a suffix in "
                f"{list(image_suffixes)}), e.g. {absent[:3]}"
            )
        problems += [(str(image_dir / k), "listed image not found") for k in absent]
        images = {k: images[k] for k in keys if k in images}
    found, no_mask, extra = match_masks(images, mask_files(mask_dir, suffixes), suffixes)
    if no_mask and dropped is None:
        raise MissingFileError(
            f"{len(no_mask)} images have no mask, e.g. {images[no_mask[0]]}: expected "
            f"{_expected(mask_dir, no_mask[0], suffixes)}; add the masks, or leave such "
            "images out with data.on_bad_sample=skip"
        )
    problems += [
        (str(images[k]), f"no mask (expected {_expected(mask_dir, k, suffixes)})") for k in no_mask
    ]
    if keys is None and extra_masks:
        problems += unclaimed_masks(extra, image_dir, mask_dir, image_suffixes, suffixes, dropped)
    for file, problem in problems:
        log.warning("left out %s: %s", file, problem)
    if dropped is not None:
        dropped += problems
    return [(images[k], found[k]) for k in images if k in found]  # name order, or the list's

"""Finding a split's files: images paired with their masks by name, and split lists.

Unpaired files (an image without a mask, a mask without an image) stop the build with the
file named, or with ``data.on_bad_sample=skip`` are left out with a warning and collected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from seglab.errors import InputError, MissingFileError

log = logging.getLogger(__name__)


def read_split_list(path: Path) -> list[str]:
    """The names a split list holds, one a line (CRLF or LF lines; blank lines skipped)."""
    names = [line.strip() for line in path.read_text().splitlines()]
    return [n for n in names if n]


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


def pair_files(
    image_dir: str | Path,
    mask_dir: str | Path,
    image_suffixes: Sequence[str],
    mask_suffix: str,
    keys: Sequence[str] | None = None,
    dropped: list[tuple[str, str]] | None = None,
) -> list[tuple[Path, Path]]:
    """(image, mask) pairs matched by name: the mask of ``<dir>/a.jpg`` is
    ``<mask_dir>/a<mask_suffix>``. Every image needs a mask; with ``keys`` (a split list) only
    those images are taken, otherwise a mask without an image is an error too (a mislabelled
    or misplaced file is found now, not after training). A folder without any image is an
    error as well.

    ``dropped``: a list to collect ``(file, problem)`` of unpaired files in, instead of
    stopping at them (``data.on_bad_sample=skip``): they are left out with a warning."""
    image_dir, mask_dir = Path(image_dir), Path(mask_dir)
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise MissingFileError(f"folder {d} does not exist")
    images = list_files(image_dir, image_suffixes)
    masks = list_files(mask_dir, [mask_suffix])
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
    no_mask = [k for k in images if k not in masks]
    if no_mask and dropped is None:
        raise MissingFileError(
            f"{len(no_mask)} images have no mask, e.g. {images[no_mask[0]]}: expected "
            f"{mask_dir / (no_mask[0] + mask_suffix)}; add the masks, or leave such images "
            "out with data.on_bad_sample=skip"
        )
    problems += [
        (str(images[k]), f"no mask (expected {mask_dir / (k + mask_suffix)})") for k in no_mask
    ]
    if keys is None:
        extra = [k for k in masks if k not in images]
        if extra and dropped is None:
            raise InputError(
                f"{len(extra)} masks have no image, e.g. {masks[extra[0]]}: expected an image "
                f"{image_dir / extra[0]}<one of {list(image_suffixes)}>; add the images, or "
                "leave such masks out with data.on_bad_sample=skip"
            )
        problems += [(str(masks[k]), "mask without an image") for k in extra]
    for file, problem in problems:
        log.warning("left out %s: %s", file, problem)
    if dropped is not None:
        dropped += problems
    return [(images[k], masks[k]) for k in images if k in masks]  # name order, or the list's

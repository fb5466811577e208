"""What masks hold, read cheaply (masks only, with PIL) before anything trains: per mask its
mode, its values (grey levels or palette indices) and the colours they show.

``seglab.data.conventions`` names a dataset's label convention from these. A mask is read as
the folder dataset reads it (``readers.read_label``), so what the scan sees is what training
decodes. Results are kept per file (path, size and modification time) for the process, so
the dataset, the check and the inference reading the same masks read each once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from seglab.data.file_pairs import seeded_order
from seglab.data.readers import read_label
from seglab.errors import InputError

Colour = tuple[int, int, int]
# More distinct values or colours than this in one mask: not a label mask (a photo, or a mask
# saved as JPEG / with anti-aliased edges).
MAX_DISTINCT = 1024


@dataclass(frozen=True)
class MaskInfo:
    """One mask as stored. ``values``: the single-channel values (grey, palette indices, or
    an RGB mask whose channels are equal), None for colour masks; ``colours``: the colours
    those pixels show (grey v as (v, v, v), a palette index as its palette colour), None when
    there are more than ``MAX_DISTINCT``; ``index_colours``: a palette mask's
    ``(index, colour)`` for each index of its palette; ``error``: why it could not be read."""

    path: Path
    mode: str = ""
    values: frozenset[int] | None = None
    colours: frozenset[Colour] | None = None
    index_colours: tuple[tuple[int, Colour], ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _grey(values: np.ndarray) -> frozenset[Colour]:
    return frozenset((v, v, v) for v in values.tolist() if 0 <= v <= 255)


def _distinct(flat: np.ndarray) -> np.ndarray:
    """The distinct values of an integer array (fast for 8 bits)."""
    if flat.dtype == np.uint8:
        return np.flatnonzero(np.bincount(flat, minlength=256))
    return np.unique(flat)


def read_mask_info(path: str | Path) -> MaskInfo:
    """What the mask at ``path`` holds (see ``MaskInfo``); an unreadable file is an info
    with ``error`` set, never an exception."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            palette = im.getpalette() if im.mode in ("P", "PA") else None
        labels, mode = read_label(path)
    except (InputError, OSError, ValueError) as e:
        return MaskInfo(path, error=str(e))
    if labels.ndim == 3:
        rgb = labels[..., :3].astype(np.uint32).reshape(-1, 3)
        packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        codes = np.unique(packed)
        if len(codes) > MAX_DISTINCT:
            return MaskInfo(path, mode)
        colours = frozenset(((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in codes.tolist())
        if all(r == g == b for r, g, b in colours):  # grey stored as RGB
            return MaskInfo(path, mode, frozenset(c[0] for c in colours), colours)
        return MaskInfo(path, mode, None, colours)
    if labels.dtype == bool:  # 1-bit masks read as 0 / 1 (shown black / white)
        values = _distinct(labels.ravel().astype(np.uint8))
        return MaskInfo(path, mode, frozenset(values.tolist()), _grey(values * 255))
    values = _distinct(labels.ravel())
    if len(values) > MAX_DISTINCT:
        return MaskInfo(path, mode, frozenset(values[:MAX_DISTINCT].tolist()), None)
    if palette is not None:
        table = [tuple(palette[i : i + 3]) for i in range(0, len(palette) - 2, 3)]
        index_colours = tuple((i, c) for i, c in enumerate(table))
        colours = frozenset(table[v] for v in values.tolist() if v < len(table))
        return MaskInfo(path, mode, frozenset(values.tolist()), colours, index_colours)
    return MaskInfo(path, mode, frozenset(values.tolist()), _grey(values))


_cache: dict[tuple[str, int, int], MaskInfo] = {}


def _cached(path: Path) -> MaskInfo:
    try:
        st = path.stat()
    except OSError as e:
        return MaskInfo(path, error=str(e))
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        _cache[key] = read_mask_info(path)
    return _cache[key]


def scan_masks(
    paths: Sequence[Path], limit: int | None = 200, seed: int = 0
) -> tuple[list[MaskInfo], int]:
    """``(infos, how many masks there are)``: every mask of ``paths``, or with ``limit`` a
    seeded sample of that many (``file_pairs.seeded_order`` of their paths: the same sample
    on every machine), in path order."""
    by_name = {str(p): Path(p) for p in paths}
    names = list(by_name)
    if limit is not None and len(names) > limit:
        names = seeded_order(names, seed)[:limit]
    return [_cached(by_name[n]) for n in sorted(names)], len(by_name)

"""From stored label values to class ids: colour tables and lookup tables.

A dataset that trains on a label it misread is worse than one that stops, so every decoder
here refuses values it does not know (an unknown colour, an index out of range) with the file
and the offending values in the message, instead of mapping them to some class or to void.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from seglab.errors import InputError


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colours_to_labels(
    rgb: np.ndarray, table: Mapping[tuple[int, int, int], int], path: str | Path
) -> np.ndarray:
    """Maps an RGB label image (H, W, 3) to ids through ``table`` (colour -> id). A colour
    that is not in the table is an error naming the file, the colour and where it first is."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"{path}: expected an RGB colour-coded label image, got {rgb.shape}")
    codes, inverse = np.unique(_pack(rgb).ravel(), return_inverse=True)
    packed = {(r << 16) | (g << 8) | b: v for (r, g, b), v in table.items()}
    ids = np.empty(len(codes), np.int64)
    for i, code in enumerate(codes.tolist()):
        if code not in packed:
            colour = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
            y, x = np.argwhere((inverse == i).reshape(rgb.shape[:2]))[0]
            raise InputError(
                f"{path}: colour {colour} (first at x={x}, y={y}, "
                f"{int((inverse == i).sum())} pixels) is not in the colour table "
                f"{sorted(table)}"
            )
        ids[i] = packed[code]
    return ids[inverse].reshape(rgb.shape[:2])


def lookup(
    values: np.ndarray, lut: np.ndarray, path: str | Path, what: str = "label value"
) -> np.ndarray:
    """Maps integer label values through ``lut`` (entries < 0: not allowed), refusing values
    outside the table with the file and the offending values in the message."""
    values = np.asarray(values)
    if values.dtype.kind not in "iub":
        raise InputError(f"{path}: expected integer labels, got {values.dtype}")
    v = values.astype(np.int64)
    bad = (v < 0) | (v >= len(lut))
    if not bad.any():
        out = lut[v]
        bad = out < 0
        if not bad.any():
            return out
    found = sorted(set(np.unique(v[bad]).tolist()))
    allowed = [i for i in range(len(lut)) if lut[i] >= 0]
    raise InputError(f"{path}: {what}(s) {found[:10]} not allowed (allowed: {_ranges(allowed)})")


def _ranges(values: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5' (short messages for long tables)."""
    out: list[str] = []
    for v in values:
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def index_lut(
    num_classes: int, ignore_index: int, extra: Mapping[int, int] | None = None
) -> np.ndarray:
    """A lookup table that keeps 0..num_classes-1 and ``ignore_index`` and refuses the rest;
    ``extra`` maps further stored values (e.g. CamVid's 11 -> ignore_index)."""
    extra = dict(extra or {})
    size = max([num_classes, ignore_index + 1, *(k + 1 for k in extra)])
    lut = np.full(size, -1, np.int64)
    lut[:num_classes] = np.arange(num_classes)
    if ignore_index >= 0:
        lut[ignore_index] = ignore_index
    for k, v in extra.items():
        lut[k] = v
    return lut


def as_colour_table(palette: Sequence[Sequence[int]]) -> dict[tuple[int, int, int], int]:
    """{colour: class id} from a palette list (class i has colour palette[i]); two classes
    with the same colour would make the table ambiguous."""
    table: dict[tuple[int, int, int], int] = {}
    for i, c in enumerate(palette):
        colour = tuple(int(v) for v in c)
        if len(colour) != 3:
            raise InputError(f"palette entry {i} ({list(c)}) is not an RGB triple")
        if colour in table:
            raise InputError(f"palette: classes {table[colour]} and {i} share colour {colour}")
        table[colour] = i  # type: ignore[index]
    return table


def compact(labels: np.ndarray) -> np.ndarray:
    """uint8 when every id fits (what albumentations' OpenCV ops want), else int32."""
    if labels.size == 0 or (labels.min() >= 0 and labels.max() <= 255):
        return labels.astype(np.uint8)
    return labels.astype(np.int32)

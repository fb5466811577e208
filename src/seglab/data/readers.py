"""Reading images and label files as the publishers store them, with errors that name the file.

Shared by the file-based datasets (MSRC, CamVid, folder, VOC, COCO) and predict.py. A dataset
that trains on a label it misread is worse than one that stops, so every decoder here refuses
values it does not know (an unknown colour, an index out of range) with the file and the
offending values in the message, instead of mapping them to some class or to void. Images of
every mode are read by one set of rules (``read_image``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

# What PIL raises for a missing, truncated or not-an-image file.
_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError)


# Modes whose pixels are wider than 8 bits: 16-bit grey PNG / TIFF opens as I;16 (I;16B,
# I;16L, I;16N by byte order); mode I holds 32-bit integers (some readers give 16-bit data
# so). Both are taken as 16-bit data and scaled by that range to 8 bits.
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """16-bit intensities to 8 bits by the full 16-bit range: ``round(v * 255 / 65535)``
    (= ``round(v / 257)``), so 0 -> 0, 65535 -> 255 and every image scales alike (no
    per-image stretch that would change what an intensity means from one image to the next).
    """
    v = values.astype(np.uint32)
    return ((v * 255 + 32767) // 65535).astype(np.uint8)


def _decode(im: Image.Image, path: str | Path) -> np.ndarray:
    """uint8 (H, W, 1) for grey modes, (H, W, 3) for colour ones; alpha is dropped."""
    mode = im.mode
    if mode in WIDE_MODES:
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"{mode} pixels range from {values.min()} to {values.max()}, outside the "
                "16-bit range (0-65535) seglab scales to 8 bits; save it as 8- or 16-bit"
            )
        return scale_16_to_8(values)[..., None]
    if mode == "F":
        raise ValueError(
            "32-bit float pixels (mode F) have no fixed range to scale to 8 bits; save the "
            "image as 8- or 16-bit"
        )
    if mode in ("L", "LA", "La", "1"):  # alpha dropped; 1-bit: 0 / 255
        return np.asarray(im.getchannel(0) if mode[0] == "L" else im.convert("L"))[..., None]
    # RGB, RGBA / RGBa / RGBX (alpha dropped, colours as stored), P / PA (palette colours),
    # CMYK, YCbCr, LAB, HSV.
    return np.asarray(im.convert("RGB"))


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """A uint8 (H, W, 1) or (H, W, 3) image with ``channels`` channels: grey is replicated
    to RGB; RGB becomes grey by ITU-R 601-2 luma (Pillow's ``convert("L")``, bit for bit), so
    a grey image replicated to RGB comes back unchanged."""
    have = image.shape[2]
    if have == channels:
        return image
    if channels == 3 and have == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 1 and have == 3:
        rgb = image.astype(np.uint32)
        luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
        return luma.astype(np.uint8)[..., None]
    raise ValueError(
        f"cannot make a {channels}-channel image of a {have}-channel one; images are read as "
        "1 (grey, data.in_channels=1) or 3 (RGB, data.in_channels=3) channels"
    )


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """The image at ``path`` as uint8 (H, W, ``channels``), ``channels`` 3 (RGB) or 1 (grey),
    whatever its mode: grey (L, 1-bit), grey + alpha (LA), RGB, RGBA / 32-bit BMP, palette
    (P), CMYK, 16-bit grey (I;16, I). The rules, shared by every dataset and predict.py:

    - alpha is dropped, never composited (the colours as stored; an alpha of 0 does not
      black out a pixel);
    - 16-bit (and mode I) pixels are scaled by the 16-bit range, ``round(v / 257)``
      (``scale_16_to_8``): Pillow's own conversion would clip everything above 255 to 255;
    - grey becomes RGB by replication, RGB becomes grey by Pillow's luma (``to_channels``).
    """
    try:
        with Image.open(path) as im:
            image = _decode(im, path)
    except _READ_ERRORS as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    return to_channels(image, channels)


def read_rgb(path: str | Path) -> np.ndarray:
    """The image at ``path`` as uint8 RGB (H, W, 3), whatever its mode (``read_image``)."""
    return read_image(path, 3)


def read_label(path: str | Path) -> tuple[np.ndarray, str]:
    """The label file at ``path`` as stored (palette images keep their indices, not their
    colours), with its PIL mode. RGBA and LA lose their alpha channel."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode in ("RGBA", "RGBX", "CMYK", "YCbCr"):
                im, mode = im.convert("RGB"), "RGB"
            elif mode in ("LA", "PA"):
                im, mode = im.getchannel(0), mode[0]
            return np.asarray(im), mode
    except _READ_ERRORS as e:
        raise ValueError(f"cannot read label file {path}: {e}") from e


def check_same_size(
    image: np.ndarray, label: np.ndarray, image_path: str | Path, label_path: str | Path
) -> None:
    """Refuses a label map whose size differs from its image's (a mismatched pair)."""
    if image.shape[:2] != label.shape[:2]:
        raise ValueError(
            f"{label_path} is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
            f"{image_path} is {image.shape[1]}x{image.shape[0]}"
        )


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def colours_to_labels(
    rgb: np.ndarray, table: Mapping[tuple[int, int, int], int], path: str | Path
) -> np.ndarray:
    """Maps an RGB label image (H, W, 3) to ids through ``table`` (colour -> id). A colour
    that is not in the table is an error naming the file, the colour and where it first is."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: expected an RGB colour-coded label image, got {rgb.shape}")
    codes, inverse = np.unique(_pack(rgb).ravel(), return_inverse=True)
    packed = {(r << 16) | (g << 8) | b: v for (r, g, b), v in table.items()}
    ids = np.empty(len(codes), np.int64)
    for i, code in enumerate(codes.tolist()):
        if code not in packed:
            colour = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
            y, x = np.argwhere((inverse == i).reshape(rgb.shape[:2]))[0]
            raise ValueError(
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
        raise ValueError(f"{path}: expected integer labels, got {values.dtype}")
    v = values.astype(np.int64)
    bad = (v < 0) | (v >= len(lut))
    if not bad.any():
        out = lut[v]
        bad = out < 0
        if not bad.any():
            return out
    found = sorted(set(np.unique(v[bad]).tolist()))
    allowed = [i for i in range(len(lut)) if lut[i] >= 0]
    raise ValueError(f"{path}: {what}(s) {found[:10]} not allowed (allowed: {_ranges(allowed)})")


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
            raise ValueError(f"palette entry {i} ({list(c)}) is not an RGB triple")
        if colour in table:
            raise ValueError(f"palette: classes {table[colour]} and {i} share colour {colour}")
        table[colour] = i  # type: ignore[index]
    return table


def compact(labels: np.ndarray) -> np.ndarray:
    """uint8 when every id fits (what albumentations' OpenCV ops want), else int32."""
    if labels.size == 0 or (labels.min() >= 0 and labels.max() <= 255):
        return labels.astype(np.uint8)
    return labels.astype(np.int32)


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
            raise ValueError(f"{out[key]} and {path} have the same name; keep only one")
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
            raise FileNotFoundError(f"folder {d} does not exist")
    images = list_files(image_dir, image_suffixes)
    masks = list_files(mask_dir, [mask_suffix])
    if not images and keys is None:
        raise ValueError(
            f"{image_dir} holds no images (files ending in one of {list(image_suffixes)}): "
            "an empty split; put the images there or leave the split out"
        )
    problems: list[tuple[str, str]] = []  # (file, what is wrong), for `dropped`
    if keys is not None:
        absent = [k for k in keys if k not in images]
        if absent and dropped is None:
            raise FileNotFoundError(
                f"{len(absent)} listed images are not in {image_dir} (with a suffix in "
                f"{list(image_suffixes)}), e.g. {absent[:3]}"
            )
        problems += [(str(image_dir / k), "listed image not found") for k in absent]
        images = {k: images[k] for k in keys if k in images}
    no_mask = [k for k in images if k not in masks]
    if no_mask and dropped is None:
        raise FileNotFoundError(
            f"{len(no_mask)} images have no mask, e.g. {images[no_mask[0]]}: expected "
            f"{mask_dir / (no_mask[0] + mask_suffix)}"
        )
    problems += [
        (str(images[k]), f"no mask (expected {mask_dir / (k + mask_suffix)})") for k in no_mask
    ]
    if keys is None:
        extra = [k for k in masks if k not in images]
        if extra and dropped is None:
            raise ValueError(
                f"{len(extra)} masks have no image, e.g. {masks[extra[0]]}: expected an image "
                f"{image_dir / extra[0]}<one of {list(image_suffixes)}>"
            )
        problems += [(str(masks[k]), "mask without an image") for k in extra]
    for file, problem in problems:
        log.warning("left out %s: %s", file, problem)
    if dropped is not None:
        dropped += problems
    return [(images[k], masks[k]) for k in images if k in masks]  # name order, or the list's

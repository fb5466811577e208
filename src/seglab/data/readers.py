"""Reading images and label files as the publishers store them, with errors that name the file.

Shared by the file-based datasets (MSRC, CamVid, folder, VOC, COCO) and predict.py. Images of
every mode are read by one set of rules (``read_image``); label files are read as stored
(``read_label``) and turned into class ids by ``seglab.data.label_tables``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from seglab.errors import InputError

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
            raise InputError(
                f"{mode} pixels range from {values.min()} to {values.max()}, outside the "
                "16-bit range (0-65535) seglab scales to 8 bits; save it as 8- or 16-bit"
            )
        return scale_16_to_8(values)[..., None]
    if mode == "F":
        raise InputError(
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
    raise InputError(
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
        raise InputError(f"cannot read image {path}: {e}") from e
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
        raise InputError(f"cannot read label file {path}: {e}") from e


def check_same_size(
    image: np.ndarray, label: np.ndarray, image_path: str | Path, label_path: str | Path
) -> None:
    """Refuses a label map whose size differs from its image's (a mismatched pair)."""
    if image.shape[:2] != label.shape[:2]:
        raise InputError(
            f"{label_path} is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
            f"{image_path} is {image.shape[1]}x{image.shape[0]}"
        )

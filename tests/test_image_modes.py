"""Images of every mode (issue 6): grey, grey + alpha, RGBA, palette, 16-bit and RGB files are
read by one set of rules (``readers.read_image``) in every file-based dataset and in
predict.py; 16-bit pixels are scaled by the 16-bit range, never clipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures import DATASETS, make_folder
from seglab import pipeline
from seglab.config import build, check_config
from seglab.data import readers
from seglab.data.readers import read_image
from seglab.prediction_io import ImageFiles

rng = np.random.default_rng(6)
H, W = 30, 20  # the folder fixture's image size


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma in floating point (read_image's integer version may differ by 1)."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _ramp16(h: int = H, w: int = W) -> np.ndarray:
    """A 16-bit ramp over the whole range: 0 first, 65535 last."""
    return np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)


def write_mode(path: Path, mode: str, h: int = H, w: int = W) -> np.ndarray:
    """Writes an image of ``mode`` at ``path``; returns the uint8 RGB (h, w, 3) expected back."""
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (h, w), dtype=np.uint8)
    alpha = rng.integers(0, 256, (h, w), dtype=np.uint8)
    alpha[0, 0] = 0  # fully transparent pixels keep their colour (alpha is dropped)
    if mode == "L":
        Image.fromarray(grey).save(path, format="PNG")
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "LA":
        Image.fromarray(np.dstack([grey, alpha]), mode="LA").save(path, format="PNG")
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "RGBA":
        Image.fromarray(np.dstack([rgb, alpha])).save(path, format="PNG")
        return rgb
    if mode == "P":
        palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
        index = rng.integers(0, 256, (h, w), dtype=np.uint8)
        im = Image.frombytes("P", (w, h), index.tobytes())
        im.putpalette(palette.ravel().tolist())
        im.save(path, format="PNG")
        return palette[index]
    if mode == "I;16":
        ramp = _ramp16(h, w)
        Image.fromarray(ramp).save(path, format="PNG")
        assert Image.open(path).mode == "I;16"
        return np.repeat(np.round(ramp / 257).astype(np.uint8)[..., None], 3, axis=2)
    if mode == "I":  # 32-bit integer TIFF holding 16-bit data
        ramp = _ramp16(h, w)
        Image.fromarray(ramp.astype(np.int32)).save(path, format="TIFF")
        assert Image.open(path).mode == "I"
        return np.repeat(np.round(ramp / 257).astype(np.uint8)[..., None], 3, axis=2)
    assert mode == "RGB"
    Image.fromarray(rgb).save(path, format="PNG")
    return rgb


MODES = ["L", "LA", "RGBA", "P", "I;16", "I", "RGB"]


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_reads_as_rgb_and_as_grey(tmp_path, mode):
    path = tmp_path / ("x.tif" if mode == "I" else "x.png")
    expected = write_mode(path, mode)
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
    np.testing.assert_array_equal(rgb, expected)
    grey = read_image(path, 1)
    assert grey.dtype == np.uint8 and grey.shape == (H, W, 1)
    if mode in ("L", "LA", "I;16", "I"):  # grey files: their own values, exactly
        np.testing.assert_array_equal(grey[..., 0], expected[..., 0])
    else:
        assert np.abs(grey[..., 0] - _luma(expected)).max() <= 1
    assert np.array_equal(readers.to_channels(grey, 3), np.repeat(grey, 3, axis=2))


def test_16_bit_is_scaled_by_its_range_not_clipped(tmp_path):
    values = np.array([[0, 128, 129, 257, 32767, 32768, 65278, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "v.png")
    assert Image.open(tmp_path / "v.png").convert("L").getpixel((3, 0)) == 255  # Pillow clips
    got = read_image(tmp_path / "v.png", 1)[0, :, 0]
    assert got.tolist() == [0, 0, 1, 1, 127, 128, 254, 255]
    assert got.tolist() == np.round(values[0] / 257).astype(int).tolist()
    ramp = _ramp16()
    Image.fromarray(ramp).save(tmp_path / "r.png")
    out = read_image(tmp_path / "r.png", 1)[..., 0]
    assert out.min() == 0 and out.max() == 255 and (np.diff(out.ravel().astype(int)) >= 0).all()
    np.testing.assert_array_equal(out, np.round(ramp.astype(np.float64) * 255 / 65535))


def test_images_without_an_8_bit_scale_are_refused(tmp_path):
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match=r"big\.tif: I pixels range from 70000 to 70000"):
        read_image(tmp_path / "big.tif")
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(ValueError, match=r"cannot read image \S+f\.tif: 32-bit float .*8- or"):
        read_image(tmp_path / "f.tif")


@pytest.mark.parametrize("name", ["folder", "camvid", "msrc", "voc", "coco"])
def test_every_file_dataset_reads_16_bit_images(make_cfg, tmp_path, monkeypatch, name):
    root = DATASETS[name](tmp_path / "data")
    cfg = make_cfg("train", f"data={name}", f"data.root={root}", "data.num_workers=0")
    ds = build(cfg.data).dataset("train")
    read: list[Path] = []
    real = readers.read_image
    monkeypatch.setattr(readers, "read_image", lambda p, c=3: read.append(Path(p)) or real(p, c))
    image, _ = ds.load(0)
    path = read[0]  # the image (MSRC reads its colour ground truth second)
    h, w = image.shape[:2]
    expected = write_mode(path, "I;16", h, w)  # a 16-bit PNG under the image's own name
    np.testing.assert_array_equal(ds.load(0)[0], expected)


def test_predict_reads_modes_like_the_datasets(tmp_path):
    paths, expected = [], []
    for mode in MODES:
        path = tmp_path / f"{mode.replace(';', '_')}.{'tif' if mode == 'I' else 'png'}"
        expected.append(write_mode(path, mode))
        paths.append(path)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    files = ImageFiles(paths, False, mean, std)
    for k, rgb in enumerate(expected):
        i, image, x = files[k]
        assert i == k
        np.testing.assert_array_equal(image, rgb)
        want = (rgb / 255.0 - np.array(mean)) / np.array(std)
        torch.testing.assert_close(x, torch.from_numpy(want.transpose(2, 0, 1)).float())
    grey = ImageFiles(paths, True, [0.5], [0.25])
    for k in range(len(paths)):
        _, image, x = grey[k]
        assert image.shape == (H, W, 1) and x.shape == (1, H, W)
        np.testing.assert_array_equal(image, read_image(paths[k], 1))


def _mixed_folder(root: Path) -> Path:
    """The folder fixture with its images rewritten as PNGs of every mode."""
    make_folder(root, splits=(("train", len(MODES)), ("val", 2)))
    images = sorted((root / "images").rglob("*.jpg"))
    for k, jpg in enumerate(images):
        jpg.unlink()
        mode = MODES[k % len(MODES)]
        write_mode(jpg.with_suffix(".tif" if mode == "I" else ".png"), mode)
    return root


@pytest.mark.parametrize("channels", [3, 1])
def test_fast_dev_run_on_mixed_modes(make_cfg, tmp_path, channels):
    root = _mixed_folder(tmp_path / "data")
    grey = ["data.in_channels=1", "data.mean=[0.5]", "data.std=[0.25]"] if channels == 1 else []
    cfg = make_cfg(
        "train",
        "data=folder",
        f"data.root={root}",
        "debug=fdr",
        "data.crop_size=32",
        f"data.batch_size={len(MODES)}",
        "data.num_workers=0",
        *grey,
    )
    dm = build(cfg.data)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (len(MODES), channels, 32, 32)
    metrics = pipeline.train(cfg)
    assert 0.0 <= metrics["val/miou"] <= 1.0


def test_grey_needs_one_mean_and_std(make_cfg):
    with pytest.raises(ValueError, match=r"data\.mean has 3 values but data\.in_channels=1"):
        check_config(make_cfg("train", "data.in_channels=1"))
    with pytest.raises(ValueError, match=r"data\.in_channels=4: images are read as 3"):
        check_config(make_cfg("train", "data.in_channels=4"))

"""The dataset tools: data_stats (class frequencies, median-frequency weights) and browse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import Subset

from fixtures import make_camvid
from seglab.data.browse import run_browse
from seglab.data.camvid import CamVidDataset
from seglab.data.shapes import ShapesDataset
from seglab.data.stats import class_statistics, median_frequency_weights, run_stats
from seglab.visualize import overlay

# Hand-made label maps: classes 0 and 1, 255 = void, class 2 never present; two sizes.
LABELS = {
    "a": np.array([[0, 0, 0, 1], [0, 0, 255, 1], [255, 0, 0, 0]], np.uint8),  # 3x4
    "b": np.zeros((4, 5), np.uint8),  # 4x5, background only
    "c": np.array([[1, 1, 1, 1], [1, 1, 255, 0], [0, 0, 0, 0]], np.uint8),  # 3x4
}


def _index_folder(root: Path) -> Path:
    for name, label in LABELS.items():
        for d in ("images", "masks"):
            (root / d / "train").mkdir(parents=True, exist_ok=True)
        image = np.full((*label.shape, 3), 100, np.uint8)
        Image.fromarray(image).save(root / "images" / "train" / f"{name}.png")
        Image.fromarray(label).save(root / "masks" / "train" / f"{name}.png")
    return root


def _hand_count(labels: list[np.ndarray], num_classes: int, ignore: int = 255):
    """Eigen & Fergus / SegNet median-frequency balancing, written out plainly."""
    counts = np.zeros(num_classes)
    present_pixels = np.zeros(num_classes)
    for lab in labels:
        for c in range(num_classes):
            n = (lab == c).sum()
            counts[c] += n
            if n:
                present_pixels[c] += (lab != ignore).sum()
    present = counts > 0
    freq = np.zeros(num_classes)
    freq[present] = counts[present] / present_pixels[present]
    weights = np.zeros(num_classes)
    weights[present] = np.median(freq[present]) / freq[present]
    return counts, freq, weights


def test_stats_match_a_hand_count(make_cfg, tmp_path, capsys):
    root = _index_folder(tmp_path / "folder")
    cfg = make_cfg(
        "data_stats",
        "data=folder",
        f"data.root={root}",
        "data.num_classes=3",
        "data.class_names=[bg,fg,never]",
        "data.palette=[[0,0,0],[255,0,0],[0,255,0]]",
        "data.dataset.mask_format=index",
        "data.num_workers=2",  # counted in DataLoader workers
        "stats.batch_size=2",
    )
    with pytest.warns(UserWarning, match=r"never present: \['never'\]"):
        stats = run_stats(cfg)
    counts, freq, weights = _hand_count(list(LABELS.values()), 3)
    # a: 8 bg, 2 fg, 2 void; b: 20 bg; c: 5 bg, 6 fg, 1 void.
    assert counts.tolist() == [33, 8, 0]
    assert stats["pixel_counts"] == [33, 8, 0]
    assert stats["ignored_pixels"] == 3
    assert stats["counted_pixels"] == 41
    np.testing.assert_allclose(stats["frequency"], counts / 41)
    np.testing.assert_allclose(stats["present_frequency"], freq)
    np.testing.assert_allclose(stats["class_weights"], weights, rtol=1e-4)
    # bg: 33 / 41 (all images), fg: 8 / 21 (the labelled pixels of a and c); the median of
    # the two present classes is their mean.
    np.testing.assert_allclose(freq[:2], [33 / 41, 8 / 21])
    median = (33 / 41 + 8 / 21) / 2
    np.testing.assert_allclose(
        stats["class_weights"][:2], [median * 41 / 33, median * 21 / 8], rtol=1e-4
    )
    assert stats["class_weights"][2] == 0.0
    assert stats["images_with_class"] == [3, 2, 0]
    assert stats["num_images"] == 3
    assert sorted(map(tuple, stats["image_sizes"])) == [(3, 4, 2), (4, 5, 1)]

    run = tmp_path / "run"
    assert json.loads((run / "data_stats.json").read_text()) == stats
    for png in ("class_frequencies.png", "image_sizes.png"):
        assert Image.open(run / png).size[0] > 100
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith("data.class_weights=["))
    assert [float(v) for v in line.split("=", 1)[1].strip("[]").split(",")] == pytest.approx(
        stats["class_weights"]
    )


def test_shapes_counts_match_an_independent_count():
    ds = ShapesDataset("val", num_samples=6, min_size=24, max_size=40)
    subset = Subset(ds, [5, 1, 3])  # Subsets are counted over their own indices
    stats = class_statistics(subset, 5, 255, num_workers=0, batch_size=2)
    labels = [ds.load(i)[1] for i in (5, 1, 3)]
    counts, freq, weights = _hand_count(labels, 5)
    assert stats["pixel_counts"] == counts.astype(int).tolist()
    np.testing.assert_allclose(stats["present_frequency"], freq)
    assert (counts > 0).all()  # every class somewhere in these three (varying sizes)
    np.testing.assert_allclose(stats["class_weights"], weights, rtol=1e-4)
    assert sum(n for _, _, n in stats["image_sizes"]) == 3


def test_median_frequency_weights_direct():
    with pytest.warns(UserWarning, match=r"never present: \[1\]"):
        w = median_frequency_weights([10, 0, 30, 5], [100, 0, 60, 10])
    # freq = 0.1, 0.5, 0.5 -> median 0.5
    np.testing.assert_allclose(w, [5.0, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="no labelled pixel"):
        median_frequency_weights([0, 0], [0, 0])


@pytest.fixture
def camvid_root(tmp_path):
    return make_camvid(tmp_path / "camvid", counts=(("train", 6), ("val", 4)))


def test_browse_val_grid_overlays_with_the_palette(make_cfg, tmp_path, camvid_root):
    cfg = make_cfg(
        "browse",
        "data=camvid",
        f"data.root={camvid_root}",
        "data.splits.test=null",
        "data.val_subset=2",  # browse still shows the whole split
        "split=val",
        "num=4",
        "cols=4",
    )
    path = run_browse(cfg)
    assert path == tmp_path / "run" / "browse_val.png"
    canvas = np.asarray(Image.open(path).convert("RGB"))
    # One row of 4 pairs of 24x32 tiles, 2 px apart.
    assert canvas.shape == (24, 8 * (32 + 2) - 2, 3)
    image, label = CamVidDataset(str(camvid_root), split="val").load(0)
    tile = canvas[:, 34 : 34 + 32]  # the first overlay
    expected = overlay(image, label, cfg.data.palette, ignore_index=255)
    np.testing.assert_array_equal(tile, expected)
    np.testing.assert_array_equal(tile[:, :4], image[:, :4])  # unlabelled: image alone
    assert not np.array_equal(tile[:, 4:], image[:, 4:])


def test_browse_train_augmented(make_cfg, tmp_path, camvid_root):
    cfg = make_cfg(
        "browse",
        "data=camvid",
        f"data.root={camvid_root}",
        "data.splits.test=null",
        "data.crop_size=32",
        "split=train",
        "num=4",
        "cols=2",
        "augment=true",
    )
    path = run_browse(cfg)
    assert path.name == "browse_train_augmented.png"
    canvas = np.asarray(Image.open(path).convert("RGB"))
    # Two rows of 2 pairs of 32x32 crops.
    assert canvas.shape == (2 * 34 - 2, 4 * 34 - 2, 3)
    # Denormalised back to 0..255 photos (the fixture's are uniform noise), not ~0 values.
    assert canvas[:32, :32].max() > 200
    # The same seed gives the same picture.
    again = np.asarray(Image.open(run_browse(cfg)).convert("RGB"))
    np.testing.assert_array_equal(canvas, again)

"""MSRC-v2, CamVid and folder datasets: read from their publishers' layouts (tiny fixtures built
here), labels hand-checked, clear errors, a fast dev run through each real config, and the
shared real data when it is present (never copied into the repository)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures import (
    MSRC_SPLITS,
    _binary_mask,
    _msrc_gt,
    _photo,
    _write_lines,
    make_camvid,
    make_folder,
    make_msrc,
)
from seglab import pipeline
from seglab.data.camvid import CamVidDataset
from seglab.data.folder import FolderDataset
from seglab.data.msrc import DB_NAME, MSRC21, MSRCDataset, extract_once
from seglab.data.readers import read_label

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MSRC22 = (*MSRC21, "void")
FAST = ["debug=fdr", "data.crop_size=32", "data.batch_size=2"]


def test_msrc21_labels_splits_and_hq_override(tmp_path):
    root = make_msrc(tmp_path)
    sizes = {s: len(MSRCDataset(str(root), s)) for s in MSRC_SPLITS}
    assert sizes == {"Train": 4, "Validation": 2, "Test": 2}
    ds = MSRCDataset(str(root), "Train")
    image, mask = ds.load(0)  # 1_1_s, 40x56
    assert image.shape == (40, 56, 3) and image.dtype == np.uint8 and mask.shape == (40, 56)
    assert MSRC21.index("cow") == 3
    assert mask[5, 5] == 3  # cow
    assert mask[5, 50] == 255  # void
    assert mask[-1, -1] == 255  # horse: not an MSRC-21 class
    assert mask[-1, 29] == 255  # mountain: not an MSRC-21 class
    assert mask[30, 40] == MSRC21.index("grass")
    # 3_1_s (portrait) uses its high-quality GT, where the grass is sky.
    _, hq = ds.load(3)
    assert hq.shape == (56, 40) and hq[40, 30] == MSRC21.index("sky")
    assert MSRC21.index("grass") not in np.unique(hq)
    # The root may also be the database folder itself (lists then found in its parent).
    assert len(MSRCDataset(str(root / DB_NAME), "Validation")) == 2


def test_msrc22_learns_void_as_class_21(tmp_path):
    ds = MSRCDataset(str(make_msrc(tmp_path)), "Train", class_names=MSRC22)
    _, mask = ds.load(0)
    assert mask[5, 5] == 3 and mask[5, 50] == 21 and mask[-1, -1] == 21 and mask[-1, 29] == 21
    assert 255 not in mask


def test_msrc_from_the_zip_extracts_once_and_safely(tmp_path):
    root = make_msrc(tmp_path / "data", zipped=True)
    ds = MSRCDataset(str(root), "Train")  # the folder holding the zip: <root>/extracted
    assert len(ds) == 4 and (root / "extracted").is_dir()
    extracted = list((root / "extracted").iterdir())
    assert len(extracted) == 1 and ds.db == extracted[0] / DB_NAME
    assert MSRCDataset(str(root / f"{DB_NAME}.zip"), "Validation").db == ds.db  # reused
    assert ds.load(0)[1][5, 5] == 3
    # Processes starting together: each gets a complete copy, no temporary folder is left.
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda _: extract_once(root / f"{DB_NAME}.zip", cache), range(4)))
    assert len(set(outs)) == 1 and [p.name for p in cache.iterdir()] == [outs[0].name]
    assert len(list((outs[0] / DB_NAME / "Images").iterdir())) == 8


def test_msrc_errors_name_the_file(tmp_path):
    root = make_msrc(tmp_path)
    bad = _msrc_gt(56, 40)  # 1_2_s is a portrait image
    bad[7, 9] = (1, 2, 3)
    Image.fromarray(bad).save(root / DB_NAME / "GroundTruth" / "1_2_s_GT.bmp")
    ds = MSRCDataset(str(root), "Train")
    with pytest.raises(ValueError, match=r"1_2_s_GT\.bmp: colour \(1, 2, 3\) \(first at x=9, y=7"):
        ds.load(1)
    (root / DB_NAME / "Images" / "2_1_s.bmp").write_bytes(b"BM not really")
    with pytest.raises(ValueError, match=r"cannot read image .*2_1_s\.bmp"):
        ds.load(2)
    (root / "Validation.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"Validation\.txt not found.*TextonBoost"):
        MSRCDataset(str(root), "Validation")
    (root / DB_NAME / "Images" / "7_1_s.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 2 images .*7_1_s\.bmp.*test=null"):
        MSRCDataset(str(root), "Test")
    with pytest.raises(ValueError, match="unknown: \\['airplane'\\]"):
        MSRCDataset(str(root), "Train", class_names=["airplane", "cow"])


@pytest.mark.parametrize("data", ["msrc", "msrc22"])
def test_msrc_fast_dev_run(make_cfg, tmp_path, data):
    root = make_msrc(tmp_path / "data", zipped=data == "msrc22")
    cfg = make_cfg("train", f"data={data}", f"data.root={root}", *FAST)
    assert cfg.data.num_classes == (21 if data == "msrc" else 22)
    assert len(cfg.data.class_weights or []) == (0 if data == "msrc" else 22)
    metrics = pipeline.train(cfg)
    assert 0.0 <= metrics["val/miou"] <= 1.0 and "test/miou" in metrics


# ------------------------------------------------------------------------------- CamVid
def test_camvid_labels_splits_and_errors(tmp_path):
    root = make_camvid(tmp_path)
    assert len(CamVidDataset(str(root), "train")) == 3
    val = CamVidDataset(str(root / "CamVid"), "val")  # CamVid/ itself works too
    image, mask = val.load(0)
    assert image.shape == (24, 32, 3) and mask.shape == (24, 32)
    assert mask[0, 10] == 0 and mask[20, 10] == 3 and mask[-1, -1] == 10
    assert (mask[:, :4] == 255).all()  # Unlabelled -> ignore
    with pytest.raises(FileNotFoundError, match=r"no test/ .* data\.splits\.test=null"):
        CamVidDataset(str(root), "test")
    bad = np.full((24, 32), 12, np.uint8)
    Image.fromarray(bad).save(root / "CamVid" / "valannot" / "0016E5_00001.png")
    with pytest.raises(ValueError, match=r"0016E5_00001\.png: label value\(s\) \[12\]"):
        val.load(1)
    (root / "CamVid" / "trainannot" / "0016E5_00002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"no mask.*trainannot/0016E5_00002\.png"):
        CamVidDataset(str(root), "train")


def test_camvid_fast_dev_run(make_cfg, tmp_path):
    root = make_camvid(tmp_path / "data", counts=(("train", 2), ("val", 1), ("test", 1)))
    cfg = make_cfg("train", "data=camvid", f"data.root={root}", *FAST)
    metrics = pipeline.train(cfg)
    assert 0.0 <= metrics["val/miou"] <= 1.0 and "test/miou" in metrics


# ------------------------------------------------------------------------------- folder
def test_folder_binary_split_folders(tmp_path):
    root = make_folder(tmp_path)
    train = FolderDataset(str(root), "train")
    assert len(train) == 3 and len(FolderDataset(str(root), "val")) == 2
    at = {
        p.relative_to(root / "images" / "train").as_posix(): i
        for i, (p, _) in enumerate(train.samples)
    }
    assert sorted(at) == ["img1.jpg", "img2.jpg", "sub/img0.jpg"]
    image, mask = train.load(at["sub/img0.jpg"])
    assert image.shape == (30, 20, 3) and mask[15, 10] == 1 and mask[0, 0] == 0
    assert set(np.unique(mask).tolist()) == {0, 1}
    # 0/1 masks and bilevel ("1" mode) masks read the same.
    Image.fromarray(_binary_mask(30, 20, 1)).save(root / "masks" / "train" / "img1.png")
    Image.fromarray(_binary_mask(30, 20, 255)).convert("1").save(
        root / "masks" / "train" / "img2.png"
    )
    for name in ("img1.jpg", "img2.jpg"):
        assert np.array_equal(train.load(at[name])[1], mask)
    Image.fromarray(_binary_mask(30, 20, 7)).save(root / "masks" / "train" / "img2.png")
    with pytest.raises(ValueError, match=r"img2\.png: a binary mask must hold 0/1 or 0/255"):
        train.load(at["img2.jpg"])


def test_folder_missing_and_extra_masks_are_errors(tmp_path):
    root = make_folder(tmp_path)
    (root / "masks" / "val" / "img1.png").rename(root / "masks" / "val" / "stray.png")
    with pytest.raises(FileNotFoundError, match=r"no mask, e\.g\. .*images/val/img1\.jpg"):
        FolderDataset(str(root), "val")
    Image.fromarray(_photo(30, 20)).save(root / "images" / "val" / "stray.jpg")
    (root / "masks" / "val" / "img1.png").write_bytes(b"")
    (root / "images" / "val" / "img1.jpg").unlink()
    with pytest.raises(ValueError, match=r"masks have no image, e\.g\. .*masks/val/img1\.png"):
        FolderDataset(str(root), "val")
    with pytest.raises(FileNotFoundError, match=r"no test split .*splits/test\.txt"):
        FolderDataset(str(root), "test")


def test_folder_split_lists_index_palette_and_rgb_masks(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "splits").mkdir()
    palette = [[0, 0, 0], [200, 0, 0], [0, 0, 200]]
    index = np.zeros((16, 16), np.uint8)
    index[:8, :8], index[8:, 8:], index[0, 15] = 1, 2, 255
    for stem in ("a", "b", "c"):
        Image.fromarray(_photo(16, 16)).save(tmp_path / "images" / f"{stem}.png")
    # a: grey indices, b: a palette (P) PNG whose colours do not matter, only its indices.
    Image.fromarray(index).save(tmp_path / "masks" / "a_mask.png")
    p = Image.frombytes("P", (16, 16), index.tobytes())
    p.putpalette([255, 255, 0] * 256)
    p.save(tmp_path / "masks" / "b_mask.png")
    Image.fromarray(np.full((16, 16), 3, np.uint8)).save(tmp_path / "masks" / "c_mask.png")
    _write_lines(tmp_path / "splits" / "train.txt", ["a", "b.png"])
    _write_lines(tmp_path / "splits" / "val.txt", ["c"])
    kw = dict(mask_format="index", num_classes=3, mask_suffix="_mask.png")
    train = FolderDataset(str(tmp_path), "train", **kw)
    assert len(train) == 2
    for i in range(2):
        assert np.array_equal(train.load(i)[1], index)
    with pytest.raises(ValueError, match=r"c_mask\.png: class index\(s\) \[3\] not allowed"):
        FolderDataset(str(tmp_path), "val", **kw).load(0)
    # RGB masks through the palette as colour table; void colours -> ignore_index.
    rgb = np.array(palette + [[255, 255, 255]], np.uint8)[np.where(index == 255, 3, index)]
    Image.fromarray(rgb).save(tmp_path / "masks" / "a_mask.png")
    kw.update(mask_format="rgb", palette=palette, void_colours=[[255, 255, 255]])
    assert np.array_equal(FolderDataset(str(tmp_path), "train", **kw).load(0)[1], index)
    kw.update(void_colours=[])
    with pytest.raises(ValueError, match=r"a_mask\.png: colour \(255, 255, 255\)"):
        FolderDataset(str(tmp_path), "train", **kw).load(0)


def test_folder_fast_dev_run(make_cfg, tmp_path):
    root = make_folder(tmp_path / "data", splits=(("train", 2), ("val", 1), ("test", 1)))
    cfg = make_cfg("train", "data=folder", f"data.root={root}", "data.splits.test=test", *FAST)
    metrics = pipeline.train(cfg)
    assert 0.0 <= metrics["val/miou"] <= 1.0 and "test/miou" in metrics


# ----------------------------------------------------------------------------- real data
needs_msrc = pytest.mark.skipif(
    not (SHARED / "msrc_v2" / f"{DB_NAME}.zip").is_file(), reason="no shared MSRC-v2 copy"
)
needs_camvid = pytest.mark.skipif(
    not (SHARED / "camvid" / "CamVid").is_dir(), reason="no shared CamVid copy"
)


@pytest.fixture(scope="session")
def msrc_cache(tmp_path_factory) -> Path:
    """One extraction of the shared zip per test session."""
    return tmp_path_factory.mktemp("msrc_extracted")


@needs_msrc
def test_real_msrc_from_the_zip(msrc_cache):
    root = str(SHARED / "msrc_v2")
    train = MSRCDataset(root, "Train", cache_dir=str(msrc_cache))
    val = MSRCDataset(root, "Validation", cache_dir=str(msrc_cache))
    assert (len(train), len(val)) == (276, 59)
    assert sum("HQGT" in g.name for _, g in train.samples + val.samples) == 7
    # Every GT colour of a handful of files (HQ ones included) is in the legend.
    hq = [i for i, (_, g) in enumerate(train.samples) if "HQGT" in g.name][:2]
    for ds, idx in ((train, [0, 1, 275, *hq]), (val, [0, 58])):
        for i in idx:
            image, mask = ds.load(i)
            assert image.shape[:2] == mask.shape and image.shape[2] == 3
            assert set(np.unique(mask).tolist()) <= set(range(21)) | {255}
    with pytest.raises(FileNotFoundError, match="test=null"):
        MSRCDataset(root, "Test", cache_dir=str(msrc_cache))  # the test images are withheld


@needs_camvid
def test_real_camvid_val(tmp_path):
    val = CamVidDataset(str(SHARED / "camvid"), "val")
    assert len(val) == 101 and len(CamVidDataset(str(SHARED / "camvid"), "train")) > 0
    for i in (0, 50, 100):
        raw, mode = read_label(val.samples[i][1])
        assert mode == "L" and raw.shape == (360, 480)
        assert set(np.unique(raw).tolist()) <= set(range(12))
        image, mask = val.load(i)
        assert image.shape == (360, 480, 3)
        assert set(np.unique(mask).tolist()) <= set(range(11)) | {255}

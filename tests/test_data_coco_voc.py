"""COCO 2017 and PASCAL VOC 2012 read from their publishers' layouts: tiny fixtures built here
in the original formats, hand-checked pixels per mode, bad files, a fast dev run each, and
(when present) the real COCO subset in shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures import (
    CAT,
    VOC_IDS,
    H,
    W,
    _voc_label,
    _write_jpeg,
    _write_png_label,
    make_coco,
    make_voc,
)
from seglab import pipeline
from seglab.config import build
from seglab.data.coco import CocoDataset
from seglab.data.collate import instance_collate
from seglab.data.voc import VOCDataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def coco_root(tmp_path) -> Path:
    return make_coco(tmp_path / "coco")


def _masks(ds: CocoDataset) -> dict[int, np.ndarray]:
    return {ds.image_id(i): ds.mask(i) for i in range(len(ds))}


def test_coco_cat_mode_is_the_union_of_cat_instances(coco_root):
    ds = CocoDataset(coco_root, "train", categories=["cat"], only_with_categories=True)
    assert ds.class_names == ["background", "cat"]
    masks = _masks(ds)
    assert sorted(masks) == [1, 2]  # image 3 has nothing, image 4 only a bird
    m = masks[1]
    assert m[6, 6] == 1 and m[12, 17] == 1  # polygon cat, also where the dog overlaps it
    assert m[12, 25] == 0 and m[7, 56] == 0  # dog and giraffe are background
    assert m[35, 45] == 1  # crowd cat region
    assert set(np.unique(m)) == {0, 1}
    assert masks[2][15, 15] == 1 and masks[2][25, 25] == 1 and masks[2][37, 50] == 0
    # Exactly the union of pycocotools' own instance masks.
    from pycocotools.coco import COCO

    api = COCO(str(coco_root / "annotations" / "instances_train2017.json"))
    for image_id, mask in masks.items():
        anns = api.loadAnns(api.getAnnIds(imgIds=image_id, catIds=[CAT]))
        union = np.any([api.annToMask(a) for a in anns], axis=0)
        np.testing.assert_array_equal(mask, union.astype(np.uint8))
    # Crowd regions as void instead.
    ignore = CocoDataset(coco_root, "train", categories=["cat"], crowd="ignore")
    m = _masks(ignore)[1]
    assert m[35, 45] == 255 and m[6, 6] == 1
    # Without the filter every image is served; val keeps only its cat image.
    assert len(CocoDataset(coco_root, "train", categories=["cat"])) == 4
    val = CocoDataset(coco_root, "val", categories=["cat"], only_with_categories=True)
    assert [val.image_id(0)] == [10] and len(val) == 1


def test_coco_voc_mode(coco_root):
    ds = CocoDataset(coco_root, "train", categories="voc", min_object_area={"train": 200})
    masks = _masks(ds)
    assert sorted(masks) == [1, 2]  # image 3: no objects, image 4: 16 px of bird
    m = masks[1]
    assert m[6, 6] == 8 and m[12, 25] == 12  # VOC cat, VOC dog
    assert m[12, 17] == 255  # cat and dog overlap
    assert m[7, 56] == 0  # giraffe is no VOC class: background
    assert m[35, 45] == 8  # crowd cat counts as cat (torchvision's choice)
    assert masks[2][37, 50] == 0  # toothbrush: background
    # Two cats overlapping: one class ('classes') or void (torchvision's 'instances').
    assert masks[2][15, 15] == 8 and masks[2][5, 5] == 8
    tv = _masks(CocoDataset(coco_root, "train", categories="voc", overlap="instances"))
    assert tv[2][15, 15] == 255 and tv[2][5, 5] == 8 and tv[1][12, 17] == 255
    assert len(tv) == 4  # no area filter: all images
    # Validation: the uncompressed RLE of a crowd person, as the official files hold it.
    val = _masks(CocoDataset(coco_root, "val", categories="voc"))
    assert val[10][3, 30] == 15 and val[10][20, 20] == 8 and val[11][10, 10] == 7
    assert val[10][20, 60] == 0


def test_coco_all_categories_are_contiguous_in_id_order(coco_root):
    ds = CocoDataset(coco_root, "train", categories="all", num_classes=81)
    assert len(ds.class_names) == 81 and ds.class_names[16] == "cat"
    masks = _masks(ds)
    assert masks[1][6, 6] == 16 and masks[1][12, 25] == 17  # cat (id 17), dog (id 18)
    assert masks[1][7, 56] == 24  # giraffe (id 25)
    assert masks[1][12, 17] == 255  # cat/dog overlap
    assert masks[2][37, 50] == 80  # toothbrush (id 90)
    assert masks[2][15, 15] == 16  # two cats
    assert masks[4][7, 7] == 15  # bird (id 16)
    assert masks[3].max() == 0
    # Merged groups and errors.
    pets = CocoDataset(coco_root, "train", categories=[["cat", "dog"]])
    assert pets.class_names == ["background", "cat+dog"] and _masks(pets)[1][12, 17] == 1
    with pytest.raises(ValueError, match="unknown categories"):
        CocoDataset(coco_root, "train", categories=["kitten"])
    with pytest.raises(ValueError, match="num_classes=3"):
        CocoDataset(coco_root, "train", categories=["cat"], num_classes=3)


def test_coco_images_and_bad_files(coco_root):
    ds = CocoDataset(coco_root, "train", categories=["cat"], only_with_categories=True)
    for i in range(len(ds)):
        image, mask = ds.load(i)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8 and mask.shape == (H, W)
    grey, _ = ds.load([ds.image_id(i) for i in range(len(ds))].index(2))
    assert np.array_equal(grey[..., 0], grey[..., 2])  # grey JPEG converted to RGB
    sample = ds[0]
    assert sample["image"].shape == (3, H, W) and sample["mask"].dtype == torch.long

    (coco_root / "train2017" / "000000000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000000000001.jpg"):
        ds.load(0)
    (coco_root / "train2017" / "000000000002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="000000000002.jpg"):
        ds.load(1)
    with pytest.raises(FileNotFoundError, match="instances_test2017.json"):
        CocoDataset(coco_root, "test")


def test_coco_cat_fast_dev_run(make_cfg, coco_root):
    cfg = make_cfg(
        "train",
        "debug=fdr",
        "data=coco_cat",
        f"data.root={coco_root}",
        "data.batch_size=2",
        "data.crop_size=32",
    )
    assert cfg.data.num_classes == 2 and cfg.data.dataset.categories == ["cat"]
    metrics = pipeline.train(cfg)
    assert 0.0 <= metrics["val/miou"] <= 1.0


def test_coco_instances_evaluation_keeps_images_without_objects(make_cfg, coco_root):
    """An evaluation image with no object of the selected categories goes through the
    box-aware pipeline as an empty target (it once raised inside albumentations)."""
    overrides = ["task=instance", "data=coco_cat_instances", f"data.root={coco_root}"]
    cfg = make_cfg("train", *overrides, tiny=False)
    dm = build(cfg.data)
    val = dm.dataset("val")
    empty = [i for i in range(len(val)) if len(val.load_instances(i)[1]["labels"]) == 0]
    assert empty  # the fixture has cat-free validation images
    for key in (empty[0], (empty[0], 7)):
        item = val[key]
        h, w = item["image"].shape[-2:]
        target = item["target"]
        assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, h, w)
        assert len(target["labels"]) == len(target["iscrowd"]) == len(target["area"]) == 0
    batch = instance_collate([val[i] for i in range(len(val))])
    assert len(batch["target"]) == len(val)


# ------------------------------------------------------------------------------- VOC


@pytest.fixture
def voc_root(tmp_path) -> Path:
    return make_voc(tmp_path / "voc")


def test_voc_pixels_and_roots(voc_root):
    ds = VOCDataset(voc_root, "train")
    assert ds.ids == VOC_IDS["train"]
    image, mask = ds.load(0)
    assert image.shape == (H, W, 3) and mask.shape == (H, W) and mask.dtype == np.uint8
    assert mask[0, 0] == 0 and mask[10, 20] == 1  # background, aeroplane
    assert mask[7, 20] == 255 and mask[28, 20] == 255  # the void border above and below
    assert set(np.unique(mask)) == {0, 1, 255}
    assert VOCDataset(voc_root, "val").load(1)[1][15, 20] == 4  # boat
    # The file holds palette indices; its RGB colours are never the labels.
    with Image.open(voc_root / "VOCdevkit/VOC2012/SegmentationClass/2007_000032.png") as im:
        assert im.mode == "P" and im.convert("RGB").getpixel((20, 10)) == (128, 0, 0)
    # VOCdevkit's parent, VOCdevkit and VOC2012 all name the same data.
    for root in (voc_root / "VOCdevkit", voc_root / "VOCdevkit" / "VOC2012"):
        other = VOCDataset(root, "trainval")
        assert len(other) == 4
        np.testing.assert_array_equal(other.load(0)[1], mask)
    with pytest.raises(FileNotFoundError, match="VOC2012"):
        VOCDataset(voc_root / "nowhere", "train")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        VOCDataset(voc_root, "test")


def test_voc_bad_files(voc_root):
    voc = voc_root / "VOCdevkit" / "VOC2012"
    label = _voc_label(1, 0)
    label[0, 0] = 21
    _write_png_label(voc / "SegmentationClass" / "2007_000032.png", label)
    ds = VOCDataset(voc_root, "train")
    with pytest.raises(ValueError, match=r"2007_000032\.png.*\[21\]"):
        ds.load(0)
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(
        voc / "SegmentationClass" / "2007_000039.png"
    )
    with pytest.raises(ValueError, match=r"2007_000039\.png is a RGB image"):
        ds.load(1)
    (voc / "SegmentationClass" / "2007_000039.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"2007_000039\.png"):
        ds.load(1)
    (voc / "JPEGImages" / "2007_000039.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"2007_000039\.jpg"):
        ds.load(1)


def test_voc_train_aug_with_sbd(voc_root, tmp_path):
    from scipy.io import savemat

    sbd = tmp_path / "benchmark_RELEASE" / "dataset"
    (sbd / "cls").mkdir(parents=True)
    voc = voc_root / "VOCdevkit" / "VOC2012"
    # SBD train: one VOC train image (VOC's mask wins), one VOC val image (excluded), one new
    # image whose JPEG VOC has; SBD val: one new image whose JPEG only SBD has.
    sbd_labels = {
        "2007_000032": 7,
        "2007_000063": 7,
        "2009_000001": 12,
        "2010_000002": 20,
    }
    for image_id, cls in sbd_labels.items():
        seg = np.zeros((H, W), np.uint8)
        seg[5:25, 5:35] = cls  # SBD has no void border
        savemat(sbd / "cls" / f"{image_id}.mat", {"GTcls": {"Segmentation": seg}})
    _write_jpeg(voc / "JPEGImages" / "2009_000001.jpg", seed=9)
    _write_jpeg(sbd / "img" / "2010_000002.jpg", seed=10)
    (sbd / "train.txt").write_text("2007_000032\n2007_000063\n2009_000001\n")
    (sbd / "val.txt").write_text("2010_000002\n")

    with pytest.raises(ValueError, match="sbd_root"):
        VOCDataset(voc_root, "train_aug")
    ds = VOCDataset(voc_root, "train_aug", sbd_root=tmp_path / "benchmark_RELEASE")
    assert ds.ids == ["2007_000032", "2007_000039", "2009_000001", "2010_000002"]
    masks = [ds.load(i)[1] for i in range(len(ds))]
    assert masks[0][10, 20] == 1 and masks[0][7, 20] == 255  # VOC's own mask
    assert masks[2][10, 10] == 12 and masks[3][10, 10] == 20 and masks[3][40, 60] == 0


def test_voc_fast_dev_run(make_cfg, voc_root):
    cfg = make_cfg(
        "train",
        "debug=fdr",
        "data=voc",
        f"data.root={voc_root}",
        "data.batch_size=2",
        "data.crop_size=32",
    )
    assert cfg.data.num_classes == 21 and len(cfg.data.palette) == 21
    assert list(cfg.data.palette[15]) == [192, 128, 128]  # person
    metrics = pipeline.train(cfg)
    assert 0.0 <= metrics["val/miou"] <= 1.0


# ------------------------------------------------------------------------- real data

COCO_MINI = SHARED_DATA / "coco_mini"


@pytest.mark.skipif(not COCO_MINI.is_dir(), reason="shared/data/coco_mini is not here")
def test_real_coco_mini_cats():
    counts, cat_ids = {}, {}
    for split in ("train", "val"):
        counts[split] = len(CocoDataset(COCO_MINI, split))
        cats = CocoDataset(COCO_MINI, split, categories=["cat"], only_with_categories=True)
        cat_ids[split] = [cats.image_id(i) for i in range(len(cats))]
        for i in range(len(cats)):
            assert (cats.mask(i) == 1).sum() > 1000  # every cat image has cat pixels
    assert counts == {"train": 18, "val": 132}
    assert cat_ids == {
        "train": [196393, 196619, 286720, 358083, 417802],
        "val": [22892, 119828, 174231, 223747, 269314, 416256, 458255],
    }
    image, mask = cats.load(0)
    assert image.shape[:2] == mask.shape and image.dtype == np.uint8

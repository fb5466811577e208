"""Tiny datasets in their publishers' layouts, built at test time (never real data):
COCO 2017, PASCAL VOC 2012, MSRC-v2, SegNet's CamVid and an images/ + masks/ folder.
``DATASETS`` maps each ``data=`` config option to a builder of a root for it."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from seglab.data.convention_names import voc_colours
from seglab.data.msrc import COLOURS, DB_NAME

rng = np.random.default_rng(0)


def _photo(h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_lines(path: Path, names: list[str]) -> None:
    path.write_bytes("".join(f"{n}\r\n" for n in names).encode())  # CRLF, as published


# --------------------------------------------------------------------------------- MSRC
MSRC_SPLITS = {"Train": ["1_1_s", "1_2_s", "2_1_s", "3_1_s"], "Validation": ["4_1_s", "5_1_s"]}
MSRC_SPLITS["Test"] = ["6_1_s", "7_1_s"]


def _msrc_gt(h: int, w: int) -> np.ndarray:
    """Left half cow, top right void, a horse block, a mountain block, the rest grass."""
    gt = np.zeros((h, w, 3), np.uint8)
    gt[:, : w // 2] = COLOURS["cow"]
    gt[h // 2 :, w // 2 :] = COLOURS["grass"]
    gt[-4:, -4:] = COLOURS["horse"]
    gt[-4:, w // 2 : w // 2 + 4] = COLOURS["mountain"]
    return gt


def make_msrc(root: Path, zipped: bool = False) -> Path:
    """A tiny MSRC-v2 in Microsoft's layout (+ the split lists next to it); 3_1_s has a
    high-quality GT in which its grass is sky."""
    db = root / DB_NAME
    for sub in ("Images", "GroundTruth", "SegmentationsGTHighQuality"):
        (db / sub).mkdir(parents=True)
    for i, stem in enumerate(sum(MSRC_SPLITS.values(), [])):
        h, w = (40, 56) if i % 2 == 0 else (56, 40)  # landscape and portrait
        # 32-bit BMPs like the publisher's photographs; 24-bit GT.
        Image.fromarray(_photo(h, w)).convert("RGBA").save(db / "Images" / f"{stem}.bmp")
        Image.fromarray(_msrc_gt(h, w)).save(db / "GroundTruth" / f"{stem}_GT.bmp")
    hq = _msrc_gt(56, 40)
    hq[(hq == COLOURS["grass"]).all(-1)] = COLOURS["sky"]
    Image.fromarray(hq).save(db / "SegmentationsGTHighQuality" / "3_1_s_HQGT.bmp")
    for split, stems in MSRC_SPLITS.items():
        _write_lines(root / f"{split}.txt", [f"{s}.bmp" for s in stems])
    if zipped:
        with zipfile.ZipFile(root / f"{DB_NAME}.zip", "w") as zf:
            for p in sorted(db.rglob("*")):
                zf.write(p, p.relative_to(root).as_posix())
        for p in sorted(db.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        db.rmdir()
    return root


def make_camvid(root: Path, counts=(("train", 3), ("val", 2))) -> Path:
    """A tiny SegNet CamVid: <split>/*.png RGB and <split>annot/*.png labels 0..11."""
    for split, n in counts:
        for sub in (split, f"{split}annot"):
            (root / "CamVid" / sub).mkdir(parents=True)
        for i in range(n):
            name = f"0016E5_{i:05d}.png"
            Image.fromarray(_photo(24, 32)).save(root / "CamVid" / split / name)
            label = np.full((24, 32), 3, np.uint8)  # Road
            label[:8] = 0  # Sky
            label[:, :4] = 11  # Unlabelled
            label[-1, -1] = 10  # Bicyclist
            Image.fromarray(label).save(root / "CamVid" / f"{split}annot" / name)
    return root


def _binary_mask(h: int, w: int, on: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = on
    return mask


def make_folder(root: Path, splits=(("train", 3), ("val", 2))) -> Path:
    """images/<split>/*.jpg and masks/<split>/*.png, 0/255 masks (one in a subfolder)."""
    for split, n in splits:
        for i in range(n):
            name = f"sub/img{i}" if i == 0 else f"img{i}"
            for d in ("images", "masks"):
                (root / d / split / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_photo(30, 20)).save(root / "images" / split / f"{name}.jpg")
            Image.fromarray(_binary_mask(30, 20, 255)).save(root / "masks" / split / f"{name}.png")
    return root


# ----------------------------------------------------------------- own data (data=folder)
OWN_COLOURS = [(0, 0, 0), (200, 0, 0), (0, 160, 0), (0, 0, 220), (240, 200, 0)]
# How masks store their classes: what tests/test_own_data.py builds datasets of.
CONVENTIONS = (
    "binary255",  # grey 0 / 255
    "binary01",  # grey 0 / 1
    "index",  # grey class ids 0..classes-1
    "palette",  # palette (P) PNG, class ids as indices
    "rgb",  # RGB colours OWN_COLOURS[id]
    "ignore",  # grey class ids with a 255 (void) border
    "reduce_zero",  # grey 1..classes: 0 is never stored (ADE20K's convention, 0 = void)
    "levels",  # grey levels 0 / 128 / 255 for 3 classes
)


def own_label(i: int, classes: int, h: int = 24, w: int = 32) -> np.ndarray:
    """Class ids (h, w): background with one vertical band per other class, shifted by
    ``i``, so every image holds every class."""
    label = np.zeros((h, w), np.uint8)
    band = max(1, w // (2 * classes))
    for c in range(1, classes):
        x = (2 * c * band + i) % (w - band)
        label[h // 4 :, x : x + band] = c
    return label


def encode_mask(label: np.ndarray, convention: str) -> Image.Image:
    """``label`` (class ids) stored as ``convention`` does (see ``CONVENTIONS``)."""
    if convention == "binary255":
        return Image.fromarray(np.where(label > 0, 255, 0).astype(np.uint8))
    if convention == "binary01":
        return Image.fromarray((label > 0).astype(np.uint8))
    if convention == "palette":
        im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
        im.putpalette(_voc_palette())
        return im
    if convention == "rgb":
        return Image.fromarray(np.array(OWN_COLOURS, np.uint8)[label])
    if convention == "ignore":
        out = label.copy()
        out[0, :] = 255
        return Image.fromarray(out)
    if convention == "reduce_zero":
        return Image.fromarray(label + 1)
    if convention == "levels":
        return Image.fromarray((label.astype(int) * 128).clip(0, 255).astype(np.uint8))
    return Image.fromarray(label)  # index


def make_own_data(
    root: Path,
    layout: str = "flat",
    n: int = 10,
    convention: str = "index",
    classes: int = 3,
    mask_suffix: str = ".png",
    image_suffixes: tuple[str, ...] = (".jpg",),
) -> Path:
    """A dataset of ``n`` images and masks in ``layout``: ``flat`` (images/ + masks/),
    ``split_folders`` (images/<split>/ ...), ``split_lists`` (+ splits/<split>.txt) or
    ``voc`` (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/<split>.txt). Image
    ``i`` is ``img<i>`` with suffix ``image_suffixes[i % len]``; its mask is
    ``img<i><mask_suffix>`` stored as ``convention``. Split folders and lists put every
    fourth image in val."""
    folders = {"voc": ("JPEGImages", "SegmentationClass")}.get(layout, ("images", "masks"))
    val = {f"img{i:02d}" for i in range(n) if i % 4 == 3}
    for i in range(n):
        stem = f"img{i:02d}"
        sub = ("val" if stem in val else "train") if layout == "split_folders" else ""
        image_dir, mask_dir = (root / f / sub for f in folders)
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        suffix = image_suffixes[i % len(image_suffixes)]
        photo = _photo(24, 32)
        Image.fromarray(photo).save(image_dir / f"{stem}{suffix}", **_quality(suffix))
        encode_mask(own_label(i, classes), convention).save(mask_dir / f"{stem}{mask_suffix}")
    lists = {"split_lists": root / "splits", "voc": root / "ImageSets" / "Segmentation"}
    if layout in lists:
        stems = [f"img{i:02d}" for i in range(n)]
        lists[layout].mkdir(parents=True)
        (lists[layout] / "train.txt").write_text("".join(f"{s}\n" for s in stems if s not in val))
        (lists[layout] / "val.txt").write_text("".join(f"{s}\n" for s in stems if s in val))
    return root


def _quality(suffix: str) -> dict:
    return {"quality": 95} if suffix in (".jpg", ".jpeg") else {}


# The official 80 COCO categories (id, name); ids skip 12, 26, 29, 30, 45, 66, 68, 69, 71, 83.
COCO_CATEGORIES = list(
    zip(
        [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70]
        + [*range(72, 83), *range(84, 91)],
        "person,bicycle,car,motorcycle,airplane,bus,train,truck,boat,traffic light,fire hydrant,"  # noqa: SIM905
        "stop sign,parking meter,bench,bird,cat,dog,horse,sheep,cow,elephant,bear,zebra,giraffe,"
        "backpack,umbrella,handbag,tie,suitcase,frisbee,skis,snowboard,sports ball,kite,"
        "baseball bat,baseball glove,skateboard,surfboard,tennis racket,bottle,wine glass,cup,"
        "fork,knife,spoon,bowl,banana,apple,sandwich,orange,broccoli,carrot,hot dog,pizza,donut,"
        "cake,chair,couch,potted plant,bed,dining table,toilet,tv,laptop,mouse,remote,keyboard,"
        "cell phone,microwave,oven,toaster,sink,refrigerator,book,clock,vase,scissors,"
        "teddy bear,hair drier,toothbrush".split(","),
        strict=True,
    )
)
CAT, DOG, GIRAFFE, BIRD, CAR, PERSON, TOOTHBRUSH = 17, 18, 25, 16, 3, 1, 90
H, W = 48, 64  # every fixture image


def _rect(x0: int, y0: int, x1: int, y1: int) -> list[list[float]]:
    """A rectangle as a COCO polygon list."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _box_mask(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _uncompressed_rle(m: np.ndarray) -> dict:
    """RLE as the official instances files store crowd regions: column-major run lengths,
    starting with a run of zeros."""
    flat = m.flatten(order="F")
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"counts": counts, "size": [int(m.shape[0]), int(m.shape[1])]}


def _write_jpeg(path: Path, grey: bool = False, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (H, W) if grey else (H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def _ann(aid: int, image_id: int, cat: int, segm, crowd: bool = False) -> dict:
    rle = segm if isinstance(segm, dict) else mask_utils.merge(mask_utils.frPyObjects(segm, H, W))
    if isinstance(rle, dict) and isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, H, W)
    return {
        "id": aid,
        "image_id": image_id,
        "category_id": cat,
        "segmentation": segm,
        "area": float(mask_utils.area(rle)),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": int(crowd),
    }


def make_coco(root: Path) -> Path:
    """A COCO 2017 folder in the official layout: train2017 (4 images), val2017 (2)."""
    crowd_cat = mask_utils.encode(np.asfortranarray(_box_mask(30, 40, 40, 52)))
    crowd_cat["counts"] = crowd_cat["counts"].decode()  # as JSON holds compressed RLE
    train_anns = [
        _ann(101, 1, CAT, _rect(4, 4, 20, 20)),
        _ann(102, 1, DOG, _rect(14, 10, 30, 16)),  # overlaps the cat at x 14..20, y 10..16
        _ann(103, 1, CAT, crowd_cat, crowd=True),
        _ann(104, 1, GIRAFFE, _rect(50, 2, 62, 12)),  # not a VOC class
        _ann(201, 2, CAT, _rect(2, 2, 20, 20)),
        _ann(202, 2, CAT, _rect(10, 10, 30, 30)),  # overlaps the other cat (same class)
        _ann(203, 2, TOOTHBRUSH, _rect(40, 30, 60, 44)),
        _ann(401, 4, BIRD, _rect(5, 5, 9, 9)),  # a tiny VOC object (16 px)
    ]
    val_anns = [
        _ann(1001, 10, CAT, _rect(10, 10, 40, 30)),
        _ann(1002, 10, PERSON, _uncompressed_rle(_box_mask(0, 8, 0, 64)), crowd=True),
        _ann(1101, 11, CAR, _rect(5, 5, 25, 25)),
    ]
    for split, ids, anns in (("train", [1, 2, 3, 4], train_anns), ("val", [10, 11], val_anns)):
        images = []
        for i in ids:
            name = f"{i:012d}.jpg"
            _write_jpeg(root / f"{split}2017" / name, grey=i == 2, seed=i)
            images.append({"id": i, "file_name": name, "height": H, "width": W, "license": 1})
        data = {
            "info": {"description": "test fixture"},
            "licenses": [{"id": 1, "name": "x", "url": ""}],
            "images": images,
            "annotations": anns,
            "categories": [{"id": i, "name": n, "supercategory": "x"} for i, n in COCO_CATEGORIES],
        }
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data))
    return root


VOC_IDS = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000063", "2008_000002"]}


def _voc_palette() -> list[int]:
    """The standard VOC colour map (bit-interleaved), 256 entries flattened."""
    return [v for colour in voc_colours(256) for v in colour]


def _voc_label(cls: int, seed: int) -> np.ndarray:
    """Background, one object of class ``cls`` with the 255 void border VOC draws."""
    m = np.zeros((H, W), np.uint8)
    y0, x0 = 8 + seed, 10 + seed
    m[y0 - 1 : y0 + 21, x0 - 1 : x0 + 31] = 255
    m[y0 : y0 + 20, x0 : x0 + 30] = cls
    return m


def _write_png_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.frombytes("P", (label.shape[1], label.shape[0]), label.tobytes())
    im.putpalette(_voc_palette())
    im.save(path)


def make_voc(base: Path) -> Path:
    """``base/VOCdevkit/VOC2012`` as the VOC 2012 trainval tarball extracts."""
    voc = base / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    all_ids = VOC_IDS["train"] + VOC_IDS["val"]
    for k, image_id in enumerate(all_ids):
        _write_jpeg(voc / "JPEGImages" / f"{image_id}.jpg", seed=k)
        _write_png_label(voc / "SegmentationClass" / f"{image_id}.png", _voc_label(k + 1, k))
    for split in ("train", "val"):
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in VOC_IDS[split]))
    (lists / "trainval.txt").write_text("".join(f"{i}\n" for i in all_ids))
    return base


DATASETS: dict[str, Callable[[Path], Path]] = {
    "coco": make_coco,
    "coco_cat": make_coco,
    "coco_voc": make_coco,
    "coco_instances": make_coco,
    "coco_cat_instances": make_coco,
    "voc": make_voc,
    "msrc": make_msrc,
    "msrc22": partial(make_msrc, zipped=True),
    "camvid": partial(make_camvid, counts=(("train", 2), ("val", 1), ("test", 1))),
    "folder": make_folder,
}

"""Your own data on the first try (issue 18): every layout data=folder reads, a seeded flat
split that is stable, masks paired by stem across extensions, and label conventions named
from the masks, with the exact overrides that fit when the config disagrees."""

from __future__ import annotations

import json
import logging
import shlex

import numpy as np
import pytest
from PIL import Image

from fixtures import CONVENTIONS, OWN_COLOURS, _photo, _voc_palette, make_own_data, own_label
from seglab import pipeline
from seglab.config import build
from seglab.data.check import check_data
from seglab.data.conventions import infer_num_classes
from seglab.data.file_pairs import seeded_order
from seglab.data.folder import FolderDataset
from seglab.data.layouts import FLAT, detect_layout, freeze_split
from seglab.errors import InputError, MissingFileError
from seglab.instantiators import build_module

STEMS = [f"img{i:02d}" for i in range(10)]
LISTED_VAL = ["img03", "img07"]  # make_own_data's val split (split folders and lists)
SPLITS = ("train", "val")


def _stems(ds: FolderDataset) -> list[str]:
    return [image.stem for image, _ in ds.samples]


# ------------------------------------------------------------------------------ layouts
@pytest.mark.parametrize("layout", ["flat", "split_folders", "split_lists", "voc"])
def test_each_layout_pairs_every_image_with_its_mask(tmp_path, caplog, layout):
    root = make_own_data(tmp_path, layout=layout, n=10)
    caplog.set_level(logging.INFO)
    train, val = (FolderDataset(str(root), s, mask_format="index", num_classes=3) for s in SPLITS)
    for ds in (train, val):
        for k, (image, mask) in enumerate(ds.samples):  # each image with its own mask
            assert mask.name == f"{image.stem}.png" and image.suffix == ".jpg"
            assert np.array_equal(ds.load(k)[1], own_label(int(image.stem[3:]), 3))
    assert sorted(_stems(train) + _stems(val)) == STEMS  # every image once, in one split
    assert not set(_stems(train)) & set(_stems(val))
    if layout == "flat":
        assert len(_stems(val)) == 2  # val_fraction 0.2 of 10
        assert "8 train / 2 val images, split with seed 0" in caplog.text
        assert "freeze_split" in caplog.text
    else:
        assert _stems(val) == LISTED_VAL
    kind = {"flat": "flat", "voc": "VOC-like"}.get(layout, layout.replace("_", " "))
    assert f"layout {kind} (" in caplog.text


def test_flat_split_is_seeded_stable_and_sized_by_the_fraction(tmp_path):
    root = make_own_data(tmp_path, n=10)

    def val(seed: int, fraction: float = 0.2) -> list[str]:
        kw = dict(mask_format="index", num_classes=3, split_seed=seed, val_fraction=fraction)
        sets = [_stems(FolderDataset(str(root), s, **kw)) for s in SPLITS]
        assert not set(sets[0]) & set(sets[1]) and sorted(sets[0] + sets[1]) == STEMS
        return sets[1]

    # The same on every machine and library version: a hash of seed and name, pinned here.
    assert val(0) == val(0) == ["img00", "img08"]
    assert val(1) == ["img02", "img07"] != val(0)
    assert len(val(0, 0.3)) == 3 and len(val(0, 0.01)) == 1 and len(val(0, 0.99)) == 9
    # Names keep their order among themselves when others are added.
    grown = seeded_order([*STEMS, *(f"new{i}" for i in range(10))], 0)
    assert [k for k in grown if k in STEMS] == seeded_order(STEMS, 0)
    with pytest.raises(MissingFileError, match=r"train and val only .*not 'test'.*splits/test"):
        FolderDataset(str(root), "test")


def test_freeze_split_writes_the_seeded_split_to_split_lists(tmp_path):
    root = make_own_data(tmp_path, n=10)
    before = _stems(FolderDataset(str(root), "val", mask_format="index", num_classes=3))
    written = freeze_split(root, 0.2, 0)
    assert written["val"].read_text().split() == before
    assert detect_layout(root, "val").kind == "split lists"
    Image.fromarray(_photo(24, 32)).save(root / "images" / "img99.jpg")  # added later
    Image.fromarray(own_label(0, 3)).save(root / "masks" / "img99.png")
    assert _stems(FolderDataset(str(root), "val", mask_format="index", num_classes=3)) == before


def test_masks_matched_by_stem_across_extensions_and_suffixes(tmp_path):
    root = make_own_data(
        tmp_path, n=6, mask_suffix="_mask.png", image_suffixes=(".jpg", ".png", ".JPEG")
    )
    (root / "masks" / "img04_mask.png").rename(root / "masks" / "img04_label.png")
    kw = dict(mask_format="index", num_classes=3, val_fraction=0.5)
    pairs = [(i.name, m.name) for s in SPLITS for i, m in FolderDataset(str(root), s, **kw).samples]
    assert sorted(pairs) == [
        ("img00.jpg", "img00_mask.png"),
        ("img01.png", "img01_mask.png"),
        ("img02.JPEG", "img02_mask.png"),
        ("img03.jpg", "img03_mask.png"),
        ("img04.png", "img04_label.png"),
        ("img05.JPEG", "img05_mask.png"),
    ]
    # Another suffix than the listed ones: named in the error, with the image it expects.
    (root / "masks" / "img04_label.png").rename(root / "masks" / "img04_seg.png")
    with pytest.raises(
        MissingFileError,
        match=r"no mask, e\.g\. \S+img04\.png: expected \S+img04\.png \(or _mask\.png, _label",
    ):
        FolderDataset(str(root), "train", **kw)
    seg = dict(kw, mask_suffixes=["_mask.png", "_seg.png"])
    pairs = [
        (i.name, m.name) for s in SPLITS for i, m in FolderDataset(str(root), s, **seg).samples
    ]
    assert ("img04.png", "img04_seg.png") in pairs and len(pairs) == 6
    # Two masks for one image: the first suffix listed that names a file wins; the other
    # is a mask without an image.
    (root / "masks" / "img04_seg.png").rename(root / "masks" / "img04_mask.png")
    Image.fromarray(own_label(0, 3)).save(root / "masks" / "img00.png")
    with pytest.raises(InputError, match=r"1 masks have no image, e\.g\. \S+img00_mask\.png"):
        FolderDataset(str(root), "train", **kw)
    skip = dict(kw, on_bad_sample="skip")
    samples = [p for s in SPLITS for p in FolderDataset(str(root), s, **skip).samples]
    assert [m.name for i, m in samples if i.stem == "img00"] == ["img00.png"]


def test_no_layout_names_what_was_looked_for(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(MissingFileError) as info:
        FolderDataset(str(tmp_path), "train")
    msg = str(info.value)
    for looked_for in (
        "images/train/ + masks/train/",
        "splits/train.txt + images/ + masks/",
        "JPEGImages/ + SegmentationClass/",
        "flat images/ + masks/",
        "holds: labels/, photos/",
        "data.root=",
    ):
        assert looked_for in msg, msg
    assert detect_layout(make_own_data(tmp_path / "own"), "train").kind == FLAT


# -------------------------------------------------------------------- label conventions
# convention -> (name the scan gives, format, classes, reduce_zero_label) for 3 classes.
NAMED = {
    "binary255": ("binary 0/255", "binary", 2, False),
    "binary01": ("binary 0/1", "binary", 2, False),
    "index": ("index (grey)", "index", 3, False),
    "palette": ("index (palette)", "index", 3, False),
    "rgb": ("RGB colours", "rgb", 3, False),
    "ignore": ("index (grey)", "index", 3, False),
    "reduce_zero": ("index, reduce zero label", "index", 3, True),
    "levels": ("grey levels", "rgb", 3, False),
}


def _cfg(make_cfg, root, *overrides, out="run"):
    return make_cfg("train", "data=folder", f"data.root={root}", *overrides, out=out)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_the_scan_names_the_convention_and_infers_the_classes(make_cfg, tmp_path, convention):
    root = make_own_data(tmp_path / "data", convention=convention, classes=3)
    name, fmt, classes, reduce_zero = NAMED[convention]
    cfg = _cfg(make_cfg, root, "data.num_classes=null")
    finding = infer_num_classes(cfg)
    assert finding.convention == name, finding.text
    data = cfg.data
    assert (data.dataset.mask_format, data.num_classes) == (fmt, classes)
    assert data.dataset.reduce_zero_label is reduce_zero
    assert len(data.class_names) == len(data.palette) == classes
    if convention == "ignore":
        assert "255 = void" in finding.text
    if convention == "rgb":
        assert sorted(map(tuple, data.palette)) == sorted(OWN_COLOURS[:3])
    if convention == "palette":  # the masks' own palette colours
        assert [list(c) for c in data.palette] == [
            _voc_palette()[3 * i : 3 * i + 3] for i in range(3)
        ]
    # The dataset built from the settled config reads every mask as the classes drawn.
    ds = build(data.dataset)(split="train")  # levels: 0, 128, 255 are classes 0, 1, 2
    stem = _stems(ds)[0]
    expected = own_label(int(stem[3:]), 3)
    if convention.startswith("binary"):
        expected = (expected > 0).astype(np.uint8)
    if convention == "ignore":
        expected[0, :] = 255
    if convention == "rgb":  # classes in colour order (the masks do not say another)
        order = [[list(c) for c in data.palette].index(list(OWN_COLOURS[i])) for i in range(3)]
        expected = np.array(order, np.uint8)[expected]
    assert np.array_equal(ds.load(0)[1], expected)


# (convention, classes drawn, config overrides, the overrides the error must name, in order;
# a second list: the other reading).
MISMATCHES = {
    "0/255 read as index": (
        "binary255",
        2,
        ["data.dataset.mask_format=index"],
        [["data.dataset.mask_format=binary"]],
    ),
    "0/1 read as rgb": (
        "binary01",
        2,
        ["data.dataset.mask_format=rgb"],
        [["data.dataset.mask_format=binary"]],
    ),
    "index read as binary": (
        "index",
        3,
        [],
        [
            ["data.num_classes=3", "data.palette=null", "data.class_names=null"],
            ["data.dataset.reduce_zero_label=true"],
        ],
    ),
    "palette read as binary": (
        "palette",
        3,
        ["data.dataset.mask_format=binary"],
        [
            [
                "data.dataset.mask_format=index",
                "data.num_classes=3",
                "data.palette=null",
                "data.class_names=null",
            ],
            ["data.dataset.mask_format=index", "data.dataset.reduce_zero_label=true"],
        ],
    ),
    "values beyond num_classes": (
        "index",
        5,
        [
            "data.dataset.mask_format=index",
            "data.num_classes=3",
            "data.class_names=[a,b,c]",
            "data.palette=null",
        ],
        [["data.num_classes=5", "data.class_names=null"]],
    ),
    "ADE20K: 0..K with K classes": (
        "index",
        4,
        ["data.num_classes=3", "data.class_names=[a,b,c]", "data.palette=null"],
        [["data.num_classes=4", "data.class_names=null"], ["data.dataset.reduce_zero_label=true"]],
    ),
    "reduce zero: 1..K, no 0": (
        "reduce_zero",
        3,
        [
            "data.dataset.mask_format=index",
            "data.num_classes=3",
            "data.class_names=[a,b,c]",
            "data.palette=null",
        ],
        [["data.dataset.reduce_zero_label=true"], ["data.num_classes=4", "data.class_names=null"]],
    ),
    "ignore value 255 not ignore_index": (
        "ignore",
        3,
        [
            "data.num_classes=3",
            "data.class_names=[a,b,c]",
            "data.palette=null",
            "data.ignore_index=250",
        ],
        [["data.ignore_index=255"]],
    ),
    "rgb colours not the palette": (
        "rgb",
        3,
        [
            "data.num_classes=3",
            "data.class_names=[a,b,c]",
            "data.palette=[[0,0,0],[200,0,0],[0,0,255]]",
        ],
        [["data.palette=[[0,0,0],[0,160,0],[200,0,0]]"]],
    ),
    "grey levels read as binary": (
        "levels",
        3,
        [],
        [
            [
                "data.num_classes=3",
                "data.palette=[[0,0,0],[128,128,128],[255,255,255]]",
                "data.class_names=null",
            ]
        ],
    ),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_a_mismatch_stops_with_the_overrides_that_fit(make_cfg, tmp_path, case):
    convention, classes, overrides, readings = MISMATCHES[case]
    root = make_own_data(tmp_path / "data", convention=convention, classes=classes)
    with pytest.raises(InputError) as info:
        infer_num_classes(_cfg(make_cfg, root, *overrides))
    msg = str(info.value)
    assert f"the masks in {root} do not fit the config" in msg
    lines = [ln for ln in msg.splitlines() if ln.startswith(("These overrides fit:", "Or, if"))]
    found = [shlex.split(ln.split(": ", 1)[1]) for ln in lines]
    assert found == readings, msg
    for i, fix in enumerate(found):  # each reading, applied, reads every mask
        finding = infer_num_classes(_cfg(make_cfg, root, *overrides, *fix, out=f"fix{i}"))
        assert finding is not None


def test_a_few_bad_masks_are_bad_files_not_the_convention(make_cfg, tmp_path, caplog):
    root = make_own_data(tmp_path / "data", convention="binary255", n=10)
    Image.fromarray(np.full((24, 32), 7, np.uint8)).save(root / "masks" / "img04.png")
    caplog.set_level(logging.INFO)
    cfg = _cfg(make_cfg, root)
    finding = infer_num_classes(cfg)  # no error: 1 of 10
    assert cfg.data.dataset.mask_format == "binary"
    assert finding.convention == "binary 0/255"
    assert f"7 only in {root / 'masks' / 'img04.png'} (bad files?)" in finding.text
    assert "1 of 10 scanned masks do not fit" in caplog.text
    # Training stops at that file, naming it (or skips it: data.on_bad_sample=skip).
    ds = FolderDataset(str(root), "train", mask_format="binary")
    bad = [p.name for _, p in ds.samples].index("img04.png")
    with pytest.raises(InputError, match=r"img04\.png: a binary mask must hold 0/1 or 0/255"):
        ds.load(bad)


def test_lossy_masks_have_no_fit(make_cfg, tmp_path):
    root = make_own_data(tmp_path / "data", convention="rgb", n=4)
    for p in (root / "masks").glob("*.png"):  # JPEG-compressed colours, saved as PNG
        noisy = np.asarray(Image.open(p)).astype(int) + np.random.default_rng(0).integers(
            -3, 4, (24, 32, 3)
        )
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(p)
    with pytest.raises(InputError, match=r"(?s)lossy masks: .*img0.*No setting reads them"):
        infer_num_classes(_cfg(make_cfg, root, "data.num_classes=3"))


def test_num_classes_null_is_inferred_before_the_model_is_built(make_cfg, tmp_path):
    root = make_own_data(tmp_path / "data", layout="split_folders", convention="ignore", n=8)
    cfg = _cfg(
        make_cfg,
        root,
        "data.num_classes=null",
        "debug=fdr",
        "data.crop_size=16",
        "data.batch_size=2",
    )
    infer_num_classes(cfg)
    assert cfg.data.num_classes == 3 and cfg.model.net.num_classes == 3  # interpolated
    assert list(cfg.data.class_names) == ["class_0", "class_1", "class_2"]
    assert build_module(cfg).num_classes == 3
    metrics = pipeline.train(cfg)
    assert len(metrics["val/confusion_matrix"]) == 3


def test_check_data_prints_the_finding(make_cfg, tmp_path, capsys, caplog):
    root = make_own_data(tmp_path / "data", convention="index", n=8)
    base = [
        "check_data",
        "data=folder",
        f"data.root={root}",
        "check.num_workers=0",
        "check.progress=false",
    ]
    report = check_data(make_cfg(*base))
    assert not report["ok"] and len(report["problems"]) == 1
    assert "These overrides fit: data.num_classes=3" in report["problems"][0]["problem"]
    out = capsys.readouterr().out
    assert "layout: flat (images/ + masks/, no split lists: a seeded train/val split)" in out
    assert "labels: class-index masks (grey PNG) with values 0-2 (3 classes)" in out
    assert "These overrides fit: data.num_classes=3" in caplog.text  # logged as the error
    assert json.loads((tmp_path / "run" / "check_data.json").read_text())["labels"]["problem"]
    report = check_data(make_cfg(*base, "data.num_classes=null", out="inferred"))
    assert report["ok"] and report["labels"]["num_classes"] == 3
    assert report["splits"]["train"]["label_values"] == [0, 1, 2]
    assert "read with data.dataset.mask_format=index data.num_classes=3" in capsys.readouterr().out


def test_a_seeded_sample_of_the_masks_is_scanned(make_cfg, tmp_path):
    root = make_own_data(tmp_path / "data", n=12)
    cfg = _cfg(make_cfg, root, "data.num_classes=null", "data.dataset.scan_masks=5")
    finding = infer_num_classes(cfg)
    assert (finding.scanned, finding.total) == (5, 12)
    assert "a seeded sample of 5 of 12 masks" in finding.summary()


def test_a_class_no_training_mask_holds_is_named(make_cfg, tmp_path, caplog):
    root = make_own_data(tmp_path / "data", convention="index", classes=3)  # values 0..2
    overrides = ["data.num_classes=4", "data.class_names=null", "data.palette=null"]
    cfg = _cfg(make_cfg, root, *overrides, "data.dataset.mask_format=index")
    with caplog.at_level("WARNING"):
        infer_num_classes(cfg)
    absent = [r.getMessage() for r in caplog.records if "occurs in none" in r.getMessage()]
    assert len(absent) == 1 and absent[0].startswith("folder: class 3 (class_3) occurs in none")

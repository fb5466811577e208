"""Bad data (issue 4): every kind of broken file stops with the file named and what is wrong
(also from inside a DataLoader worker), ``data.on_bad_sample=skip`` skips it with a warning
and a count, and ``check_data.py`` lists all problems of a dataset at once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures import _msrc_gt, make_camvid, make_folder, make_msrc
from helpers import ROOT
from seglab import pipeline
from seglab.data.bad_samples import WorkerTraceback
from seglab.data.camvid import CamVidDataset
from seglab.data.check import check_data
from seglab.data.datamodule import SegDataModule
from seglab.data.folder import FolderDataset
from seglab.data.msrc import DB_NAME, MSRCDataset

FAST = ["debug=fdr", "data.crop_size=32", "data.batch_size=2"]


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not an image\x00\x01\x02")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _folder_dm(root: Path, **kwargs) -> SegDataModule:
    args = dict(num_workers=0, persistent_workers=False, batch_size=3, eval_batch_size=1)
    return SegDataModule(
        partial(FolderDataset, root=str(root), on_bad_sample=kwargs.get("on_bad_sample", "error")),
        name="folder",
        num_classes=2,
        class_names=["background", "foreground"],
        palette=[[0, 0, 0], [255, 255, 255]],
        **{**args, **kwargs},
    )


# ------------------------------------------------------------- each case: folder, CamVid
# (dataset, case) -> (break the fixture at root, then the error expected: type, pattern).
# Folder images are images/train/{sub/img0,img1,img2}.jpg with masks/train/*.png (0/255);
# CamVid frames are CamVid/train/0016E5_0000{0,1,2}.png with labels in trainannot/.
F, C = "images/train", "CamVid/train"
CASES = {
    "corrupt image": (
        lambda r: _garbage(r / F / "img1.jpg"),
        lambda r: _garbage(r / C / "0016E5_00001.png"),
        "load",
        ValueError,
        r"cannot read image \S+(img1\.jpg|0016E5_00001\.png): cannot identify",
    ),
    "truncated image": (
        lambda r: _truncate(r / F / "img1.jpg"),
        lambda r: _truncate(r / C / "0016E5_00001.png"),
        "load",
        ValueError,
        r"cannot read image \S+(img1\.jpg|0016E5_00001\.png): .*[Tt]runcated",
    ),
    "corrupt mask": (
        lambda r: _garbage(r / "masks/train/img1.png"),
        lambda r: _garbage(r / "CamVid/trainannot/0016E5_00001.png"),
        "load",
        ValueError,
        r"cannot read label file \S+(img1|0016E5_00001)\.png",
    ),
    "missing mask": (
        lambda r: (r / "masks/train/img1.png").unlink(),
        lambda r: (r / "CamVid/trainannot/0016E5_00001.png").unlink(),
        "build",
        FileNotFoundError,
        r"1 images have no mask, e\.g\. \S+(img1\.jpg|0016E5_00001\.png): expected",
    ),
    "extra mask": (
        lambda r: Image.fromarray(np.zeros((30, 20), np.uint8)).save(r / "masks/train/x.png"),
        lambda r: Image.fromarray(np.zeros((24, 32), np.uint8)).save(r / "CamVid/trainannot/x.png"),
        "build",
        ValueError,
        r"1 masks have no image, e\.g\. \S+/x\.png",
    ),
    "mask of another size": (
        lambda r: Image.fromarray(np.zeros((10, 20), np.uint8)).save(r / "masks/train/img1.png"),
        lambda r: Image.fromarray(np.zeros((10, 32), np.uint8)).save(
            r / "CamVid/trainannot/0016E5_00001.png"
        ),
        "load",
        ValueError,
        r"(img1|0016E5_00001)\.png is \d+x10 \(WxH\) but its image \S+ is \d+x(30|24)",
    ),
    "label not in the class table": (
        lambda r: Image.fromarray(np.full((30, 20), 7, np.uint8)).save(r / "masks/train/img1.png"),
        lambda r: Image.fromarray(np.full((24, 32), 12, np.uint8)).save(
            r / "CamVid/trainannot/0016E5_00001.png"
        ),
        "load",
        ValueError,
        r"(img1|0016E5_00001)\.png: .*(found \[7\]|label value\(s\) \[12\] not allowed)",
    ),
    "empty split": (
        lambda r: [p.unlink() for p in sorted((r / F).rglob("*.jpg"))],
        lambda r: [p.unlink() for p in sorted((r / C).glob("*.png"))],
        "build",
        ValueError,
        r"\S+/(images/train|CamVid/train) holds no images .*an empty split",
    ),
}


@pytest.mark.parametrize("dataset", ["folder", "camvid"])
@pytest.mark.parametrize("case", list(CASES))
def test_each_bad_file_is_an_error_naming_it(tmp_path, dataset, case):
    break_folder, break_camvid, when, error, pattern = CASES[case]
    if dataset == "folder":
        root = make_folder(tmp_path)
        make = partial(FolderDataset, str(root), "train")
        break_folder(root)
    else:
        root = make_camvid(tmp_path)
        make = partial(CamVidDataset, str(root), "train")
        break_camvid(root)
    if when == "build":
        with pytest.raises(error, match=pattern):
            make()
        return
    ds = make()
    bad = next(i for i, (p, m) in enumerate(ds.samples) if "1." in p.name or "1." in m.name)
    with pytest.raises(error, match=pattern):
        ds.load(bad)
    for i in set(range(len(ds))) - {bad}:  # the others still load
        ds.load(i)


def test_msrc_bad_colour_missing_gt_and_empty_list(tmp_path):
    root = make_msrc(tmp_path)
    gt = _msrc_gt(40, 56)
    gt[3, 5] = (1, 2, 3)  # not in the legend
    Image.fromarray(gt).save(root / DB_NAME / "GroundTruth" / "1_1_s_GT.bmp")
    with pytest.raises(ValueError, match=r"1_1_s_GT\.bmp: colour \(1, 2, 3\) \(first at x=5, y=3"):
        MSRCDataset(str(root), "Train").load(0)
    (root / DB_NAME / "GroundTruth" / "2_1_s_GT.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of the 4 images .* lack .*2_1_s_GT\.bmp"):
        MSRCDataset(str(root), "Train")
    skipping = MSRCDataset(str(root), "Train", on_bad_sample="skip")
    assert len(skipping) == 3 and "2_1_s_GT.bmp" in skipping.dropped[0][0]
    (root / "Validation.txt").write_text("")
    dm = SegDataModule(
        partial(MSRCDataset, root=str(root)),
        name="msrc",
        splits={"train": "Train", "val": "Validation"},
        num_classes=1,
        class_names=["x"],
        palette=[[0, 0, 0]],
        root=str(root),
    )
    with pytest.raises(ValueError, match=r"the val split \('Validation'\) is empty in \S+"):
        dm.dataset("val")


def test_folder_empty_split_list(tmp_path):
    root = make_folder(tmp_path, splits=(("all", 2),))
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n")
    with pytest.raises(ValueError, match=r"splits/train\.txt lists no images: an empty split"):
        FolderDataset(str(root), "train")


# ------------------------------------------------------------------- inside a worker
def test_an_error_in_a_worker_reaches_the_user_as_itself(tmp_path):
    root = make_folder(tmp_path)
    _garbage(root / F / "img1.jpg")
    dm = _folder_dm(root, num_workers=1)
    with pytest.raises(ValueError) as info:
        list(dm.train_dataloader())
    # The message is the dataset's own (file first), not PyTorch's "Caught ValueError in
    # DataLoader worker process 0" with the file at the end of a pasted traceback.
    assert str(info.value).startswith(f"cannot read image {root / F / 'img1.jpg'}: ")
    assert "Caught" not in str(info.value)
    assert isinstance(info.value.__cause__, WorkerTraceback)
    assert "folder.py" in str(info.value.__cause__)  # where in the worker it was raised
    # Without workers: the original exception, with its own traceback.
    with pytest.raises(ValueError, match=r"^cannot read image .*img1\.jpg"):
        list(_folder_dm(root).train_dataloader())


# ---------------------------------------------------------------- on_bad_sample=skip
@pytest.mark.parametrize("workers", [0, 1])
def test_skip_drops_bad_samples_warns_and_counts(tmp_path, caplog, workers):
    root = make_folder(tmp_path, splits=(("train", 4), ("val", 2)))
    _garbage(root / F / "img1.jpg")
    Image.fromarray(np.full((30, 20), 7, np.uint8)).save(root / "masks/train/img2.png")
    dm = _folder_dm(root, on_bad_sample="skip", num_workers=workers, batch_size=2)
    caplog.set_level(logging.WARNING)
    for _ in range(2):  # two epochs: each bad file is warned about once, counted twice
        batches = list(dm.train_dataloader())
        assert set(batches[0]) == {"image", "mask", "index", "size"}
        assert sum(len(b["index"]) for b in batches) == 2  # 4 samples, 2 bad
    # drop_last batches of 2: one of (good, good), (bad, bad) or two of (good, bad); a batch
    # of only bad samples is dropped, never handed to the model.
    assert all(len(b["index"]) >= 1 for b in batches)
    assert dm.skipped == {"train": {"samples": 2, "times": 4, "dropped": 0}}
    warned = [r.getMessage() for r in caplog.records if "skipping train sample" in r.getMessage()]
    assert len(warned) == 2
    assert any("img1.jpg" in w and "cannot read image" in w for w in warned)
    assert any("img2.png" in w and "found [7]" in w for w in warned)
    dm.teardown("fit")
    assert "train split: 2 bad sample(s) skipped (4 time(s) in all)" in caplog.text


def test_skip_with_every_sample_bad_is_an_error(tmp_path):
    root = make_folder(tmp_path, splits=(("train", 2), ("val", 1)))
    for p in (root / F).rglob("*.jpg"):
        _garbage(p)
    dm = _folder_dm(root, on_bad_sample="skip", batch_size=1)
    with pytest.raises(ValueError, match=r"every sample of the train split .* was bad \(2 skip"):
        list(dm.train_dataloader())


def test_skip_trains_past_bad_files_and_reports_the_count(make_cfg, tmp_path, caplog):
    root = make_folder(tmp_path / "data", splits=(("train", 3), ("val", 2)))
    _garbage(root / F / "img1.jpg")  # read by the one training batch (2 of 2 left)
    (root / "masks/train/img2.png").unlink()  # left out when the split is built
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(root / "masks/val/img1.png")
    cfg = make_cfg(
        "train",
        "data=folder",
        f"data.root={root}",
        *FAST,
        "data.on_bad_sample=skip",
        "data.num_workers=1",
        "data.persistent_workers=false",
    )
    caplog.set_level(logging.WARNING)
    metrics = pipeline.train(cfg)
    assert 0.0 <= metrics["val/miou"] <= 1.0
    text = caplog.text
    assert f"left out {root / F / 'img2.jpg'}: no mask" in text
    assert f"cannot read image {root / F / 'img1.jpg'}" in text and "skipping train" in text
    assert "val/img1.png is 20x10 (WxH)" in text
    assert "train split: 1 bad sample(s) skipped" in text and "1 unpaired file(s)" in text
    assert "val split: 1 bad sample(s) skipped" in text


def test_on_bad_sample_is_validated_and_error_in_every_data_config(make_cfg):
    with pytest.raises(ValueError, match=r"data\.on_bad_sample='ignore'; use one of"):
        _folder_dm(Path("."), on_bad_sample="ignore")
    options = [p.stem for p in (ROOT / "conf" / "data").glob("*.yaml")]
    datasets = [o for o in options if not o.startswith("_")]  # _base: the shared defaults
    assert "_base" in options and len(datasets) == len(options) - 1
    for name in datasets:
        data = make_cfg("train", f"data={name}").data
        assert data.on_bad_sample == "error", name
        # A dataset that drops unpaired files or bad annotations follows the same setting.
        if "on_bad_sample" in data.dataset:
            data.on_bad_sample = "skip"
            assert data.dataset.on_bad_sample == "skip", name


# ------------------------------------------------------------------------- check_data
def _break_many(root: Path) -> dict[str, str]:
    """Five problems in train, one in val: file -> a word of its problem."""
    _garbage(root / F / "img1.jpg")
    _truncate(root / F / "img2.jpg")
    (root / "masks/train/img3.png").unlink()
    Image.fromarray(np.zeros((30, 20), np.uint8)).save(root / "masks/train/extra.png")
    Image.fromarray(np.full((30, 20), 7, np.uint8)).save(root / "masks/train/img4.png")
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(root / "masks/val/img1.png")
    return {
        f"{F}/img1.jpg": "cannot identify",
        f"{F}/img2.jpg": "runcated",
        f"{F}/img3.jpg": "no mask",
        "masks/train/extra.png": "mask without an image",
        f"{F}/img4.jpg": "found [7]",
        "images/val/img1.jpg": "(WxH)",
    }


def test_check_data_reports_all_problems_at_once(make_cfg, tmp_path):
    clean = make_folder(tmp_path / "clean")
    report = check_data(
        make_cfg("check_data", "data=folder", f"data.root={clean}", "check.num_workers=0")
    )
    assert report["ok"] and report["problems"] == []
    train = report["splits"]["train"]
    assert train["images"] == 3 and train["label_values"] == [0, 1]
    assert train["min_size_hw"] == train["max_size_hw"] == [30, 20]
    assert report["splits"]["test"] == {"name": None}  # not configured: not checked

    broken = make_folder(tmp_path / "broken", splits=(("train", 6), ("val", 2)))
    expected = _break_many(broken)
    report = check_data(
        make_cfg("check_data", "data=folder", f"data.root={broken}", "check.num_workers=0", out="b")
    )
    assert not report["ok"]
    found = {str(Path(p["file"]).relative_to(broken)): p["problem"] for p in report["problems"]}
    assert set(found) == set(expected)
    for file, word in expected.items():
        assert word in found[file], (file, found[file])
    assert report["splits"]["train"]["problems"] == 5 and report["splits"]["val"]["problems"] == 1
    saved = json.loads((tmp_path / "b" / "check_data.json").read_text())
    assert len(saved["problems"]) == 6


def test_check_data_script_exits_1_on_problems(tmp_path):
    broken = make_folder(tmp_path / "broken", splits=(("train", 6), ("val", 2)))
    _break_many(broken)
    run_dir = tmp_path / "run"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "src/check_data.py",
            "data=folder",
            f"data.root={broken}",
            "check.num_workers=1",
            "check.progress=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "6 problem(s)" in proc.stdout
    assert len(json.loads((run_dir / "check_data.json").read_text())["problems"]) == 6
    assert "check_data.log" in os.listdir(run_dir)

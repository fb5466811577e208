"""Every expected failure is one clear message and a non-zero exit: the entry scripts run as
users run them (their ``main`` with a command line, in this process for speed: the same
Hydra, logging and exit path as a shell), over broken data, bad config values, damaged
checkpoints and awkward command lines. Each case checks the exit status, a message naming the
file or key and the fix, no traceback, and the message in the run's log."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures import make_folder
from helpers import TINY, compose_cfg, run_script_main
from seglab.errors import EXIT_INPUT, InputError
from seglab.pipeline import evaluate, train

# A tiny U-Net on the folder fixture (30 x 20 images, 0/255 masks): seconds per run.
FOLDER_RUN = [
    *(o for o in TINY if not o.startswith("data.")),
    "data=folder",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.crop_size=16",
    "trainer.max_epochs=1",
    "logger=csv",
]


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:200])


def _mask_of_another_size(root: Path) -> None:
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks/train/img1.png")


def _mask_value_outside(root: Path) -> None:
    m = np.zeros((30, 20), np.uint8)
    m[0, 0] = 7
    Image.fromarray(m).save(root / "masks/train/img1.png")


# case -> (break the fixture, what the message must hold)
DATA_CASES = {
    "truncated image": (lambda r: _truncate(r / "images/train/img1.jpg"), ["img1.jpg"]),
    "0-byte image": (lambda r: (r / "images/train/img1.jpg").write_bytes(b""), ["img1.jpg"]),
    "text named .png": (lambda r: (r / "masks/train/img1.png").write_text("hi"), ["img1.png"]),
    "mask of another size": (_mask_of_another_size, ["img1"]),
    "mask value outside the classes": (_mask_value_outside, ["img1.png", "mask_format"]),
    "image without a mask": (
        lambda r: (r / "masks/train/img1.png").unlink(),
        ["img1", "on_bad_sample=skip"],
    ),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_is_one_message_exit_2_and_logged(case, tmp_path, capsys, monkeypatch):
    root = make_folder(tmp_path / "data")
    breaks, words = DATA_CASES[case]
    breaks(root)
    run_dir = tmp_path / "run"
    code, out = run_script_main(
        "train", [*FOLDER_RUN, f"data.root={root}"], capsys, monkeypatch, run_dir
    )
    assert code == EXIT_INPUT, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    log = (run_dir / "train.log").read_text()
    for word in words:
        assert word in out and word in log, (word, out[-2000:])
    if case in ("truncated image", "0-byte image", "text named .png", "mask of another size"):
        assert "check_data.py" in out and "data.on_bad_sample=skip" in out  # what to do
    assert not list(run_dir.rglob("*.ckpt"))  # stopped before training saved anything


def test_bad_data_traceback_when_asked(tmp_path, capsys, monkeypatch):
    root = make_folder(tmp_path / "data")
    _truncate(root / "images/train/img1.jpg")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(InputError, match="img1.jpg"):
        run_script_main(
            "train", [*FOLDER_RUN, f"data.root={root}"], capsys, monkeypatch, tmp_path / "run"
        )


# case -> (overrides, what the message must hold)
CONFIG_CASES = {
    "batch_size=abc": (["data.batch_size=abc"], ["data.batch_size", "abc"]),
    "batch_size=0": (["data.batch_size=0"], ["data.batch_size"]),
    "batch_size=-2": (["data.batch_size=-2"], ["data.batch_size"]),
    "lr=-1": (["optimizer.lr=-1"], ["optimizer.lr"]),
    "missing data.root": ([*FOLDER_RUN, "data.root=/nonexistent/seglab"], ["data.root"]),
    "unknown encoder": (["model=unet", "model.encoder=resnet9"], ["model.encoder"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_is_named_before_anything_is_built(case, tmp_path, capsys, monkeypatch):
    overrides, words = CONFIG_CASES[case]
    run_dir = tmp_path / "run"
    base = [] if "data=folder" in overrides else TINY
    code, out = run_script_main("train", [*base, *overrides], capsys, monkeypatch, run_dir)
    assert code == EXIT_INPUT, out[-3000:]
    assert "Traceback" not in out
    log = (run_dir / "train.log").read_text()
    for word in words:
        assert word in out and word in log, (word, out[-2000:])


def test_unreadable_command_line_says_to_quote(tmp_path, capsys, monkeypatch):
    # `data.root=/my data` unquoted: the shell splits it in two.
    code, out = run_script_main(
        "train", ["data.root=/my", "data"], capsys, monkeypatch, tmp_path / "a"
    )
    assert code == EXIT_INPUT and "Traceback" not in out
    assert """'data.root="/my data"'""" in out
    code, out = run_script_main(
        "train", ["data.root=/données"], capsys, monkeypatch, tmp_path / "b"
    )
    assert code == EXIT_INPUT and """'data.root="/données"'""" in out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of a tiny run on the folder fixture (its training data)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    root = make_folder(tmp / "data", splits=(("train", 4), ("val", 3)))
    cfg = compose_cfg("train", [*FOLDER_RUN, f"data.root={root}", "test=false"], tmp / "run")
    return Path(train(cfg)["best_checkpoint"])


def _damage(kind: str, path: Path, good: Path) -> None:
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "would run code":
        torch.save({"state_dict": {}, "hook": os.system}, path)


@pytest.mark.parametrize("kind", ["truncated", "random bytes", "would run code"])
@pytest.mark.parametrize("script", ["eval", "predict"])
def test_damaged_checkpoint_named_and_told_apart(
    kind, script, checkpoint, tmp_path, capsys, monkeypatch
):
    bad = tmp_path / "bad.ckpt"
    _damage(kind, bad, checkpoint)
    images = tmp_path / "in"
    make_folder(images)
    args = [f"ckpt_path={bad}"] + ([f"input={images}/images"] if script == "predict" else [])
    run_dir = tmp_path / "run"
    code, out = run_script_main(script, args, capsys, monkeypatch, run_dir)
    assert code == EXIT_INPUT and "Traceback" not in out, out[-3000:]
    assert str(bad) in out and str(bad) in (run_dir / f"{script}.log").read_text()
    assert "weights_only=False" not in out  # never advice to turn the check off
    if kind == "would run code":
        assert "refused" in out and "run code" in out
    else:
        assert f"not a readable checkpoint ({bad.stat().st_size} bytes)" in out


def test_eval_reads_the_data_the_user_names(checkpoint, tmp_path, capsys, monkeypatch):
    """One checkpoint evaluated on two other folders gets each folder's own figures."""
    figures = []
    for i in range(2):
        root = make_folder(tmp_path / f"other{i}", splits=(("val", 2 + i),))
        cfg = compose_cfg("eval", [f"ckpt_path={checkpoint}", f"+data.root={root}"], tmp_path)
        metrics = evaluate(cfg)
        # Every pixel of the folder's own 2 or 3 images (30 x 20, no ignored pixels).
        assert sum(map(sum, metrics["val/confusion_matrix"])) == (2 + i) * 30 * 20
        figures.append(metrics["val/confusion_matrix"])
    assert figures[0] != figures[1]
    # A corrupt validation image in the folder named is read, and stops the evaluation.
    root = tmp_path / "other0"
    _truncate(next((root / "images/val").rglob("*.jpg")))
    code, out = run_script_main(
        "eval",
        [f"ckpt_path={checkpoint}", f"+data.root={root}"],
        capsys,
        monkeypatch,
        tmp_path / "r",
    )
    assert code == EXIT_INPUT and str(root) in out and "Traceback" not in out


def _predict_case(case: str, tmp: Path) -> tuple[list[str], list[str]]:
    """Inputs for one predict case: (extra overrides, what the message must hold)."""
    images = tmp / "in"
    images.mkdir()
    if case == "all inputs corrupt":
        for name in ("a.png", "b.jpg"):
            (images / name).write_bytes(b"not an image")
        return [f"input={images}"], ["2 of 2 images could not be read", "a.png"]
    if case == "one corrupt file as input":
        (images / "a.png").write_bytes(b"")
        return [f"input={images / 'a.png'}"], ["1 of 1 images could not be read", "a.png"]
    if case == "no images":
        (images / "notes.txt").write_text("x")
        return [f"input={images}"], [str(images), "holds no image"]
    # an output folder that cannot be written: under a file
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
    (tmp / "file").write_text("x")
    return [f"input={images}", f"output={tmp / 'file' / 'sub'}"], ["output=", "file/sub"]


@pytest.mark.parametrize(
    "case", ["all inputs corrupt", "one corrupt file as input", "no images", "unwritable output"]
)
def test_predict_never_reports_success_for_work_not_done(
    case, checkpoint, tmp_path, capsys, monkeypatch
):
    args, words = _predict_case(case, tmp_path)
    run_dir = tmp_path / "run"
    code, out = run_script_main(
        "predict", [f"ckpt_path={checkpoint}", *args], capsys, monkeypatch, run_dir
    )
    assert code == EXIT_INPUT and "Traceback" not in out, out[-3000:]
    log = (run_dir / "predict.log").read_text()
    for word in words:
        assert word in out and word in log, (word, out[-2000:])


def test_a_train_split_smaller_than_a_batch_stops_before_training(tmp_path, capsys, monkeypatch):
    root = make_folder(tmp_path / "data", splits=(("train", 3), ("val", 2)))
    args = [*FOLDER_RUN, f"data.root={root}", "data.batch_size=8"]
    code, out = run_script_main("train", args, capsys, monkeypatch, tmp_path / "run")
    assert code == EXIT_INPUT and "Traceback" not in out, out[-3000:]
    assert "the train split has 3 images, fewer than one batch" in out
    assert "data.batch_size=3 or lower" in out
    assert not (tmp_path / "run" / "metrics.json").exists()  # no result for work not done

"""predict.py never reports success for work not done (issue 21): unreadable inputs end the run
with an error after the others are written, an input without images and an unwritable output
folder stop it before the model is loaded, and no output overwrites another."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import TINY, compose_cfg
from seglab import pipeline, prediction
from seglab.errors import InputError, MissingFileError
from seglab.prediction import predict
from seglab.prediction_io import INSTANCE_MASKS, MASK, OVERLAY, plan_outputs

rng = np.random.default_rng(21)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """One tiny trained checkpoint shared by the tests below."""
    out = tmp_path_factory.mktemp("train")
    pipeline.train(compose_cfg("train", [*TINY, "trainer.max_epochs=1", "test=false"], out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture
def run(ckpt, make_cfg):
    """``run(input, output, *overrides)``: predict in-process with the shared checkpoint."""

    def _run(inputs: Path, output: Path, *overrides: str) -> list[Path]:
        cfg = make_cfg(
            "predict", f"ckpt_path={ckpt}", f"input={inputs}", f"output={output}",
            "num_workers=0", "progress=false", "precision=32-true", *overrides,
        )  # fmt: skip
        return predict(cfg)

    return _run


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the checkpoint is loaded: the check under test must come first."""

    def refuse(path):
        raise AssertionError(f"the checkpoint {path} was loaded before the input was checked")

    monkeypatch.setattr(prediction, "load_checkpoint", refuse)


def _image(path: Path, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_unreadable_inputs_end_the_run_after_the_others(run, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    bad = tmp_path / "bad"
    for name in ("a.png", "b.jpg", "c.png"):
        _corrupt(bad / name)
    with pytest.raises(InputError, match=r"^3 of 3 images could not be read \(listed above\)"):
        run(bad, tmp_path / "out_bad")
    assert _files(tmp_path / "out_bad") == []
    assert "wrote" not in caplog.text  # nothing claimed
    assert all(f"cannot read image {bad / n}" in caplog.text for n in ("a.png", "b.jpg", "c.png"))

    with pytest.raises(InputError, match=r"1 of 1 images .*a\.png.*nothing was written"):
        run(bad / "a.png", tmp_path / "out_one")

    mixed = tmp_path / "mixed"
    sizes = {"g1": (20, 28), "g2": (33, 17), "g3": (20, 28), "sub/g4": (16, 40)}
    for name, (h, w) in sizes.items():
        _image(mixed / f"{name}.png", h, w)
    for name in ("x1.png", "x2.jpg", "sub/x3.tif"):
        _corrupt(mixed / name)
    out = tmp_path / "out_mixed"
    with pytest.raises(InputError, match=r"^3 of 7 images could not be read") as err:
        run(mixed, out)
    assert all(name in str(err.value) for name in ("x1.png", "x2.jpg", "x3.tif"))
    assert f"the outputs of the other 4 are in {out}" in str(err.value)
    for name, (h, w) in sizes.items():  # the good ones were written, at their own size
        assert Image.open(out / f"{name}.png").size == (w, h)
        assert (out / f"{name}_overlay.png").is_file()
    assert len(_files(out)) == 8


def test_single_corrupt_file_is_an_error(run, tmp_path):
    _corrupt(tmp_path / "one.png")
    with pytest.raises(InputError, match=r"^1 of 1 images could not be read.*one\.png"):
        run(tmp_path / "one.png", tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.png"))


def test_no_image_stops_before_the_model_is_loaded(run, tmp_path, no_model):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no image here")
    (empty / "sub" / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(InputError, match=r"input \S+empty holds no image: .*\.jpg, .*\.png"):
        run(empty, tmp_path / "out")
    with pytest.raises(MissingFileError, match=r"input \S+missing does not exist"):
        run(tmp_path / "missing", tmp_path / "out")
    # Only earlier outputs (under the output folder, inside the input): no image either.
    _image(empty / "preds" / "a.png", 8, 8)
    with pytest.raises(InputError, match="holds no image.*not under the output folder"):
        run(empty, empty / "preds")


def test_names_that_share_a_stem_keep_their_extension(run, tmp_path):
    inputs = tmp_path / "in"
    _image(inputs / "x.jpg", 40, 30)
    _image(inputs / "x.png", 24, 36)
    _image(inputs / "y.png", 12, 20)
    out = tmp_path / "out"
    written = run(inputs, out)
    assert sorted(p.name for p in written) == ["x.jpg.png", "x.png.png", "y.png"]
    assert _files(out) == [
        "x.jpg.png", "x.jpg_overlay.png", "x.png.png", "x.png_overlay.png", "y.png",
        "y_overlay.png",
    ]  # fmt: skip
    for name in ("x.jpg", "x.png"):  # each mask is its own image's prediction
        alone = run(inputs / name, tmp_path / f"alone_{name}")
        assert [p.name for p in alone] == ["x.png"]
        mask = np.asarray(Image.open(out / f"{name}.png"))
        np.testing.assert_array_equal(mask, np.asarray(Image.open(alone[0])))
    assert Image.open(out / "x.jpg.png").size == (30, 40)
    assert Image.open(out / "x.png.png").size == (36, 24)


def test_unresolvable_collisions_stop_before_anything_is_written(run, tmp_path, no_model):
    inputs = tmp_path / "in"
    _image(inputs / "a.png", 8, 8)
    _image(inputs / "a_overlay.png", 8, 8)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"inputs \S+a\.png and \S+a_overlay\.png would both"):
        run(inputs, out)
    assert not out.exists()
    # The output folder is the input's: a mask would overwrite an input.
    _image(tmp_path / "same" / "b.jpg", 8, 8)
    _image(tmp_path / "same" / "b.png", 8, 8)
    _image(tmp_path / "same" / "b.jpg.png", 8, 8)
    with pytest.raises(InputError, match=r"would overwrite the input \S+b\.jpg\.png"):
        run(tmp_path / "same", tmp_path / "same")
    assert len(list((tmp_path / "same").iterdir())) == 3


def test_instance_outputs_are_planned_too(tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    _image(inputs / "a.png", 8, 8)
    _image(inputs / "a_instances" / "b.png", 8, 8)
    plan = plan_outputs(inputs, out, [MASK, OVERLAY])  # without instance masks: fine
    assert plan.stems == [out / "a", out / "a_instances" / "b"]
    with pytest.raises(InputError, match=r"would be in \S+a_instances, the folder of .*a\.png"):
        plan_outputs(inputs, out, [MASK, OVERLAY], [INSTANCE_MASKS])
    with pytest.raises(InputError, match=r"coco_json=\S+a_overlay\.png is also the output"):
        plan_outputs(inputs, out, [MASK, OVERLAY], [], {"coco_json": out / "a_overlay.png"})
    # Outputs inside the input folder are not inputs of the next run.
    _image(inputs / "preds" / "a.png", 8, 8)
    assert plan_outputs(inputs, inputs / "preds", [MASK]).inputs == [
        inputs / "a.png",
        inputs / "a_instances" / "b.png",
    ]


def test_unwritable_output_stops_before_the_model_is_loaded(run, tmp_path, no_model):
    _image(tmp_path / "in" / "a.png", 8, 8)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):  # root writes anyway: a folder under a file instead
            (tmp_path / "file").write_text("a file, not a folder")
            locked = tmp_path / "file" / "sub"
        with pytest.raises(InputError, match=r"output=<a writable folder>") as err:
            run(tmp_path / "in", locked)
        assert f"cannot write to the output folder {locked}" in str(err.value)
    finally:
        (tmp_path / "locked").chmod(0o755)

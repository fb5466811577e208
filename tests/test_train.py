"""End-to-end, in-process: train, resume, evaluate, predict and what a run leaves behind."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from helpers import ROOT
from seglab import pipeline


class CtrlCAt(L.Callback):
    """Presses Ctrl+C (raises KeyboardInterrupt) before training step ``step``."""

    def __init__(self, step: int = 6) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class LossRecorder(L.Callback):
    """Keeps every training step's loss, as Lightning hands it to callbacks."""

    losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        LossRecorder.losses.append(float(outputs["loss"]))


def _last_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_fast_dev_run_on_the_default_config(make_cfg):
    cfg = make_cfg("train", "debug=fdr", tiny=False)
    metrics = pipeline.train(cfg)
    assert 0.0 <= metrics["val/miou"] <= 1.0
    assert "test/miou" in metrics


def test_logged_training_loss_is_the_mean_of_every_step(make_cfg):
    """train/loss_step, written every log_every_n_steps, is the mean over the steps since the
    last write; train/loss_epoch is the epoch's mean (4 steps per epoch, 2 epochs)."""
    LossRecorder.losses = []
    cfg = make_cfg(
        "train",
        "logger=csv",
        "trainer.log_every_n_steps=3",
        "+callbacks.losses._target_=test_train.LossRecorder",
    )
    pipeline.train(cfg)
    losses = LossRecorder.losses
    assert len(losses) == 8
    text = (Path(cfg.paths.output_dir) / "csv" / "metrics.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    step = {int(r["step"]): float(r["train/loss_step"]) for r in rows if r["train/loss_step"]}
    # Lightning's loggers write at steps 2 and 5 (0-based): the means of steps 0-2 and 3-5.
    assert step.keys() == {2, 5}
    assert step[2] == pytest.approx(np.mean(losses[0:3]), rel=1e-6)
    assert step[5] == pytest.approx(np.mean(losses[3:6]), rel=1e-6)
    epoch = [float(r["train/loss_epoch"]) for r in rows if r["train/loss_epoch"]]
    assert epoch == pytest.approx([np.mean(losses[0:4]), np.mean(losses[4:8])], rel=1e-6)


def test_train_resume_eval_and_outputs(make_cfg, tmp_path):
    common = ["seed=3", "trainer.deterministic=true"]
    # Uninterrupted: 2 epochs.
    full = make_cfg("train", *common, out="full")
    m_full = pipeline.train(full)
    full_dir = Path(full.paths.output_dir)

    # What a run leaves behind.
    saved = json.loads((full_dir / "metrics.json").read_text())
    for key in (
        "val/miou",
        "val/miou_best",
        "val/aacc",
        "val/macc",
        "val/iou/star",
        "val/confusion_matrix",
        "test/miou",
        "best_checkpoint",
    ):
        assert key in saved, key
    assert saved["val/miou"] == pytest.approx(m_full["val/miou"])
    assert (full_dir / "config_tree.log").read_text().count("SegDataModule") == 1
    ckpt = torch.load(full_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["seglab_config"]["model"]["net"]["_target_"] == "seglab.models.unet.UNet"
    # Provenance: the code's commit, package versions and seed, in the run and the checkpoint.
    prov = json.loads((full_dir / "provenance.json").read_text())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert prov["git"]["commit"] == commit.stdout.strip()
    assert prov["packages"]["torch"] == torch.__version__.split("+")[0]
    assert prov["seed"] == 3
    assert ckpt["seglab_provenance"]["git"] == prov["git"]
    assert ckpt["seglab_provenance"]["packages"] == prov["packages"]

    # TensorBoard got losses, metrics, learning rate, overlays, confusion matrix, hparams.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(full_dir / "tensorboard")).Reload()
    tags = events.Tags()
    assert {"train/loss_step", "val/miou", "val/loss", "val/iou/star"} <= set(tags["scalars"])
    assert any(t.startswith("lr-") for t in tags["scalars"])
    assert {"val/predictions", "val/confusion_matrix"} <= set(tags["images"])
    assert len(events.Images("val/predictions")) == 2  # one per epoch
    assert "hp/val_miou" in tags["scalars"]

    # Interrupted after 1 epoch, then resumed to 2: same weights and metrics, bit for bit.
    half = make_cfg("train", *common, "trainer.max_epochs=1", out="half")
    pipeline.train(half)
    last = Path(half.paths.output_dir) / "checkpoints" / "last.ckpt"
    resumed = make_cfg("train", *common, f"ckpt_path={last}", out="resumed")
    m_resumed = pipeline.train(resumed)
    a, b = _last_state(full_dir), _last_state(Path(resumed.paths.output_dir))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert m_resumed["val/confusion_matrix"] == m_full["val/confusion_matrix"]
    assert m_resumed["val/miou"] == m_full["val/miou"]

    # Interrupted mid-epoch (Ctrl+C at step 6: epoch 1, batch 2 of 4), resumed from
    # interrupted.ckpt: the resumable loader skips the batches already trained on, so again
    # the same weights and metrics, bit for bit.
    cut = make_cfg("train", *common, "+callbacks.ctrl_c._target_=test_train.CtrlCAt", out="cut")
    with pytest.raises(SystemExit):
        pipeline.train(cut)
    interrupted = Path(cut.paths.output_dir) / "checkpoints" / "interrupted.ckpt"
    state = torch.load(interrupted, weights_only=True)
    assert (state["epoch"], state["global_step"]) == (1, 6)
    mid = make_cfg("train", *common, f"ckpt_path={interrupted}", out="mid")
    m_mid = pipeline.train(mid)
    b = _last_state(Path(mid.paths.output_dir))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert m_mid["val/confusion_matrix"] == m_full["val/confusion_matrix"]

    # eval.py rebuilds the model from the checkpoint's config and reproduces the figures.
    ev = make_cfg("eval", f"ckpt_path={saved['best_checkpoint']}", out="eval")
    m_eval = pipeline.evaluate(ev)
    assert m_eval["val/confusion_matrix"] == saved["val/confusion_matrix"]
    assert m_eval["val/miou"] == pytest.approx(saved["val/miou"], abs=1e-12)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())[
        "val/miou"
    ] == pytest.approx(saved["val/miou"])
    m_test = pipeline.evaluate(
        make_cfg("eval", f"ckpt_path={saved['best_checkpoint']}", "split=test", out="eval_test")
    )
    assert m_test["test/miou"] == pytest.approx(saved["test/miou"], abs=1e-12)
    # Sliding windows as large as the images (64) give the whole-image figures; flip TTA
    # gives a valid, different evaluation.
    best = f"ckpt_path={saved['best_checkpoint']}"
    m_slide = pipeline.evaluate(
        make_cfg("eval", best, "inference.mode=slide", "inference.window=64", out="slide")
    )
    assert m_slide["val/confusion_matrix"] == saved["val/confusion_matrix"]
    m_flip = pipeline.evaluate(make_cfg("eval", best, "inference.flip=true", out="flip"))
    assert 0 < m_flip["val/miou"] <= 1
    assert m_flip["val/confusion_matrix"] != saved["val/confusion_matrix"]

    # predict.py writes a palette mask and an overlay per image, at the image's size, and
    # reports unreadable files without stopping.
    inputs = tmp_path / "inputs"
    (inputs / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(inputs / "a.png")
    Image.fromarray(rng.integers(0, 255, (70, 41), dtype=np.uint8)).save(inputs / "sub" / "b.jpg")
    (inputs / "broken.png").write_bytes(b"not an image")
    pr = make_cfg(
        "predict",
        f"ckpt_path={last}",
        f"input={inputs}",
        f"output={tmp_path / 'pred'}",
        out="predict",
    )
    written = pipeline.predict(pr)
    assert sorted(p.name for p in written) == ["a.png", "b.png"]
    mask = Image.open(tmp_path / "pred" / "a.png")
    assert mask.mode == "P" and mask.size == (53, 37)
    assert np.asarray(mask).max() < 5
    assert Image.open(tmp_path / "pred" / "sub" / "b_overlay.png").size == (41, 70)
    # Batched prediction (same-size images share a batch, read by workers) writes the same
    # masks as one image at a time.
    same = tmp_path / "same"
    same.mkdir()
    for k in range(5):
        pixels = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(same / f"{k}.png")
    masks = {}
    for bs, workers in [(1, 0), (4, 2)]:
        out = tmp_path / f"pred_bs{bs}"
        pipeline.predict(
            make_cfg(
                "predict",
                f"ckpt_path={last}",
                f"input={same}",
                f"output={out}",
                f"batch_size={bs}",
                f"num_workers={workers}",
                out=f"predict_bs{bs}",
            )
        )
        masks[bs] = [np.asarray(Image.open(out / f"{k}.png")) for k in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(masks[1], masks[4], strict=True))


def test_bad_checkpoint_is_refused_clearly(make_cfg, tmp_path):
    bogus = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(ValueError, match="not a seglab checkpoint"):
        pipeline.evaluate(make_cfg("eval", f"ckpt_path={bogus}"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipeline.evaluate(make_cfg("eval", f"ckpt_path={tmp_path / 'missing.ckpt'}"))

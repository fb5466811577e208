"""End-to-end, in-process: train, resume, evaluate, predict and what a run leaves behind.

The seeded runs that most tests look at are trained once per module (per pytest worker),
by module-scoped fixtures; each test then checks one thing about them.
"""

from __future__ import annotations

import csv
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import ROOT, tiny_cfg
from seglab import pipeline
from seglab.errors import InputError
from seglab.prediction import predict

# Every seeded run below: the same seed, deterministic algorithms, 2 epochs of 4 steps.
SEEDED = ("seed=3", "trainer.deterministic=true")


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


@dataclass(frozen=True)
class Run:
    """A finished run: its folder and the metrics its command returned."""

    dir: Path
    metrics: dict[str, Any]

    @property
    def last(self) -> Path:
        return self.dir / "checkpoints" / "last.ckpt"

    def last_state(self) -> dict[str, torch.Tensor]:
        return torch.load(self.last, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder that holds this module's shared runs."""
    return tmp_path_factory.mktemp("runs")


def _train(runs: Path, out: str, *overrides: str) -> Run:
    """A seeded run into ``runs / out``. Deterministic algorithms are switched off again after
    it, as conftest's ``_reset_determinism`` does after each test: the test that first asks
    for a module fixture must not run under the fixture's setting."""
    cfg = tiny_cfg("train", [*SEEDED, *overrides], runs / out)
    try:
        metrics = pipeline.train(cfg)
    finally:
        torch.use_deterministic_algorithms(False)
    return Run(Path(cfg.paths.output_dir), metrics)


@pytest.fixture(scope="module")
def full(runs: Path) -> Run:
    """Uninterrupted: 2 epochs."""
    return _train(runs, "full")


@pytest.fixture(scope="module")
def saved(full: Run) -> dict[str, Any]:
    """The full run's metrics.json."""
    return json.loads((full.dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def full_ckpt(full: Run) -> dict[str, Any]:
    return torch.load(full.last, weights_only=True)


@pytest.fixture(scope="module")
def provenance(full: Run) -> dict[str, Any]:
    return json.loads((full.dir / "provenance.json").read_text())


@pytest.fixture(scope="module")
def events(full: Run) -> EventAccumulator:
    """What the full run wrote to TensorBoard."""
    return EventAccumulator(str(full.dir / "tensorboard")).Reload()


@pytest.fixture(scope="module")
def half(runs: Path) -> Run:
    """Stopped after 1 epoch."""
    return _train(runs, "half", "trainer.max_epochs=1")


@pytest.fixture(scope="module")
def resumed(runs: Path, half: Run) -> Run:
    """``half`` resumed from its last.ckpt to 2 epochs."""
    return _train(runs, "resumed", f"ckpt_path={half.last}")


@dataclass(frozen=True)
class Cut:
    """A run stopped by Ctrl+C: the exit it raised and the checkpoint it left."""

    exit: SystemExit | None
    interrupted: Path


@pytest.fixture(scope="module")
def cut(runs: Path) -> Cut:
    """Ctrl+C at step 6: epoch 1, batch 2 of 4."""
    interrupted = runs / "cut" / "checkpoints" / "interrupted.ckpt"
    try:
        _train(runs, "cut", "+callbacks.ctrl_c._target_=test_train.CtrlCAt")
    except SystemExit as err:
        return Cut(err, interrupted)
    return Cut(None, interrupted)


@pytest.fixture(scope="module")
def mid(runs: Path, cut: Cut) -> Run:
    """``cut`` resumed from its interrupted.ckpt."""
    return _train(runs, "mid", f"ckpt_path={cut.interrupted}")


@pytest.fixture(scope="module")
def evaluated(runs: Path, saved: dict[str, Any]) -> Run:
    """eval.py on the full run's best checkpoint (val)."""
    cfg = tiny_cfg("eval", [f"ckpt_path={saved['best_checkpoint']}"], runs / "eval")
    return Run(Path(cfg.paths.output_dir), pipeline.evaluate(cfg))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prediction inputs: ``mixed/`` holds a 37x53 RGB a.png, a 70x41 grey sub/b.jpg and an
    unreadable broken.png; ``same/`` five 40x56 RGB images."""
    root = tmp_path_factory.mktemp("images")
    mixed, same = root / "mixed", root / "same"
    (mixed / "sub").mkdir(parents=True)
    same.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(mixed / "a.png")
    Image.fromarray(rng.integers(0, 255, (70, 41), dtype=np.uint8)).save(mixed / "sub" / "b.jpg")
    (mixed / "broken.png").write_bytes(b"not an image")
    for k in range(5):
        pixels = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(same / f"{k}.png")
    return root


def _predict(runs: Path, ckpt: Path, inputs: Path, out: str, *overrides: str) -> list[Path]:
    cfg = tiny_cfg(
        "predict",
        [f"ckpt_path={ckpt}", f"input={inputs}", f"output={runs / out}", *overrides],
        runs / f"{out}_run",
    )
    return predict(cfg)


@pytest.fixture(scope="module")
def predicted(runs: Path, half: Run, images: Path) -> list[Path]:
    """predict.py on ``images/mixed`` with the 1-epoch run's last.ckpt, into ``runs/pred``:
    the masks written before it stops on the unreadable file (exit status 2)."""
    with pytest.raises(InputError, match=r"1 of 3 images could not be read.*broken\.png"):
        _predict(runs, half.last, images / "mixed", "pred")
    return sorted(p for p in (runs / "pred").rglob("*.png") if "_overlay" not in p.name)


# --- Short runs of their own ------------------------------------------------------------


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


def test_bad_checkpoint_is_refused_clearly(make_cfg, tmp_path):
    bogus = tmp_path / "x.ckpt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(ValueError, match="not a seglab checkpoint"):
        pipeline.evaluate(make_cfg("eval", f"ckpt_path={bogus}"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipeline.evaluate(make_cfg("eval", f"ckpt_path={tmp_path / 'missing.ckpt'}"))


# --- What a run leaves behind -----------------------------------------------------------


# What metrics.json must hold after a training run.
FINAL_KEYS = (
    "val/miou",
    "val/miou_best",
    "val/aacc",
    "val/macc",
    "val/iou/star",
    "val/confusion_matrix",
    "val/baseline/majority/miou",
    "val/baseline/majority/aacc",
    "test/miou",
    "best_checkpoint",
)


def test_metrics_json_holds_the_final_figures_and_the_best_checkpoint(saved):
    missing = [key for key in FINAL_KEYS if key not in saved]
    assert not missing, missing


def test_metrics_json_matches_what_train_returns(full, saved):
    assert saved["val/miou"] == pytest.approx(full.metrics["val/miou"])


def test_config_tree_log_shows_the_config_once(full):
    assert (full.dir / "config_tree.log").read_text().count("SegDataModule") == 1


def test_checkpoint_holds_the_run_config(full_ckpt):
    assert full_ckpt["seglab_config"]["model"]["net"]["_target_"] == "seglab.models.unet.UNet"


def test_provenance_records_the_code_commit(provenance):
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert provenance["git"]["commit"] == commit.stdout.strip()


def test_provenance_records_package_versions_and_seed(provenance):
    assert provenance["packages"]["torch"] == torch.__version__.split("+")[0]
    assert provenance["seed"] == 3


def test_checkpoint_holds_the_provenance(full_ckpt, provenance):
    assert full_ckpt["seglab_provenance"]["git"] == provenance["git"]
    assert full_ckpt["seglab_provenance"]["packages"] == provenance["packages"]


def test_tensorboard_gets_losses_metrics_and_learning_rate(events):
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_step", "val/miou", "val/loss", "val/iou/star"} <= scalars
    assert any(t.startswith("lr-") for t in scalars)


def test_tensorboard_gets_hparams_metric(events):
    assert "hp/val_miou" in events.Tags()["scalars"]


def test_tensorboard_gets_an_overlay_per_epoch_and_the_confusion_matrix(events):
    assert {"val/predictions", "val/confusion_matrix"} <= set(events.Tags()["images"])
    assert len(events.Images("val/predictions")) == 2  # one per epoch


# --- Resuming gives the uninterrupted run, bit for bit ----------------------------------


def _assert_same_weights(a: Run, b: Run) -> None:
    sa, sb = a.last_state(), b.last_state()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_resume_after_an_epoch_gives_the_same_weights(full, resumed):
    _assert_same_weights(full, resumed)


def test_resume_after_an_epoch_gives_the_same_metrics(full, resumed):
    assert resumed.metrics["val/confusion_matrix"] == full.metrics["val/confusion_matrix"]
    assert resumed.metrics["val/miou"] == full.metrics["val/miou"]


def test_ctrl_c_stops_the_run_with_an_interrupted_checkpoint_at_that_step(cut):
    """In-process the run ends in SystemExit; test_interrupts checks the process's exit 130."""
    assert cut.exit is not None
    state = torch.load(cut.interrupted, weights_only=True)
    assert (state["epoch"], state["global_step"]) == (1, 6)


def test_resume_mid_epoch_gives_the_same_weights(full, mid):
    """The resumable loader skips the batches already trained on."""
    _assert_same_weights(full, mid)


def test_resume_mid_epoch_gives_the_same_metrics(full, mid):
    assert mid.metrics["val/confusion_matrix"] == full.metrics["val/confusion_matrix"]


# --- eval.py rebuilds the model from the checkpoint's config ----------------------------


def test_eval_reproduces_the_training_run_figures(evaluated, saved):
    assert evaluated.metrics["val/confusion_matrix"] == saved["val/confusion_matrix"]
    assert evaluated.metrics["val/miou"] == pytest.approx(saved["val/miou"], abs=1e-12)


def test_eval_writes_metrics_json(evaluated, saved):
    written = json.loads((evaluated.dir / "metrics.json").read_text())
    assert written["val/miou"] == pytest.approx(saved["val/miou"])


def test_eval_on_the_test_split_reproduces_test_miou(make_cfg, saved):
    m_test = pipeline.evaluate(
        make_cfg("eval", f"ckpt_path={saved['best_checkpoint']}", "split=test")
    )
    assert m_test["test/miou"] == pytest.approx(saved["test/miou"], abs=1e-12)


def test_sliding_windows_as_large_as_the_image_give_whole_image_figures(make_cfg, saved):
    best = f"ckpt_path={saved['best_checkpoint']}"
    m_slide = pipeline.evaluate(
        make_cfg("eval", best, "inference.mode=slide", "inference.window=64")
    )
    assert m_slide["val/confusion_matrix"] == saved["val/confusion_matrix"]


def test_flip_tta_gives_a_valid_different_evaluation(make_cfg, saved):
    best = f"ckpt_path={saved['best_checkpoint']}"
    m_flip = pipeline.evaluate(make_cfg("eval", best, "inference.flip=true"))
    assert 0 < m_flip["val/miou"] <= 1
    assert m_flip["val/confusion_matrix"] != saved["val/confusion_matrix"]


# --- predict.py -------------------------------------------------------------------------


def test_predict_writes_the_readable_files_then_stops(predicted):
    assert sorted(p.name for p in predicted) == ["a.png", "b.png"]


def test_predict_writes_a_palette_mask_at_the_image_size(runs, predicted):
    mask = Image.open(runs / "pred" / "a.png")
    assert mask.mode == "P" and mask.size == (53, 37)
    assert np.asarray(mask).max() < 5


def test_predict_writes_an_overlay_at_the_image_size(runs, predicted):
    assert Image.open(runs / "pred" / "sub" / "b_overlay.png").size == (41, 70)


def test_batched_prediction_writes_the_same_masks_as_one_image_at_a_time(runs, half, images):
    """Same-size images share a batch, read by workers."""
    masks = {}
    for bs, workers in [(1, 0), (4, 2)]:
        out = f"pred_bs{bs}"
        _predict(
            runs, half.last, images / "same", out, f"batch_size={bs}", f"num_workers={workers}"
        )
        masks[bs] = [np.asarray(Image.open(runs / out / f"{k}.png")) for k in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(masks[1], masks[4], strict=True))

"""Weight EMA (``callbacks=[default,ema]``): validation, the best checkpoint and the final
evaluation use the averaged weights, and a resumed run continues the average exactly.

The average is checked against one computed here from the raw weights recorded after every
optimizer step, so these tests do not trust Lightning's callback to define it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn

from helpers import tiny_cfg
from seglab import pipeline

# Seeded and deterministic (as tests/test_train.py), 2 epochs of 4 steps; a low decay, so
# that after 8 steps the average is still far from the raw weights.
DECAY = 0.5
EMA = ("callbacks=[default,ema]", f"callbacks.ema.decay={DECAY}", "++callbacks.visualizer=null")
SEEDED = ("seed=3", "trainer.deterministic=true", *EMA)
RECORDED = ("+callbacks.weights._target_=test_ema.WeightRecorder",)

Weights = dict[str, torch.Tensor]


def _weights(module: L.LightningModule) -> Weights:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class WeightRecorder(L.Callback):
    """The raw weights after every optimizer step (by global step), and the weights each
    validation / test epoch runs with: in training (by global step, with the validation's
    confusion matrix) and afterwards (by stage)."""

    raw: dict[int, Weights] = {}
    validated: dict[int, Weights] = {}
    confmats: dict[int, torch.Tensor] = {}
    evaluated: dict[str, Weights] = {}

    @classmethod
    def reset(cls) -> None:
        cls.raw, cls.validated, cls.confmats, cls.evaluated = {}, {}, {}, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        WeightRecorder.raw[trainer.global_step] = _weights(pl_module)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        if batch_idx == 0 and trainer.state.fn == TrainerFn.FITTING:
            WeightRecorder.validated[trainer.global_step] = _weights(pl_module)
        elif batch_idx == 0:
            WeightRecorder.evaluated["val"] = _weights(pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            WeightRecorder.confmats[trainer.global_step] = pl_module.last_confmat["val"]

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        if batch_idx == 0:
            WeightRecorder.evaluated["test"] = _weights(pl_module)


@dataclass(frozen=True)
class Run:
    dir: Path
    metrics: dict[str, Any]
    raw: dict[int, Weights]
    validated: dict[int, Weights]
    confmats: dict[int, torch.Tensor]
    evaluated: dict[str, Weights]

    def ckpt(self, path: str | Path | None = None) -> dict[str, Any]:
        """A checkpoint (default: the run's last.ckpt), loaded as seglab loads them."""
        return torch.load(path or self.dir / "checkpoints" / "last.ckpt", weights_only=True)


def _train(runs: Path, out: str, *overrides: str) -> Run:
    """A seeded run with the EMA into ``runs / out``, recorded by ``WeightRecorder``."""
    WeightRecorder.reset()
    cfg = tiny_cfg("train", [*SEEDED, *RECORDED, *overrides], runs / out)
    try:
        metrics = pipeline.train(cfg)
    finally:
        torch.use_deterministic_algorithms(False)
    r = WeightRecorder
    return Run(Path(cfg.paths.output_dir), metrics, r.raw, r.validated, r.confmats, r.evaluated)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ema_runs")


@pytest.fixture(scope="module")
def full(runs: Path) -> Run:
    """2 epochs."""
    return _train(runs, "full")


@pytest.fixture(scope="module")
def manual_ema(full: Run) -> dict[int, Weights]:
    """The EMA of the recorded raw weights after each step, as torch's ``get_ema_avg_fn``
    defines it: the first step's weights, then ``decay * ema + (1 - decay) * weights``
    (integer buffers truncated, as ``copy_`` into them does)."""
    out: dict[int, Weights] = {}
    ema: Weights | None = None
    for step in sorted(full.raw):
        raw = full.raw[step]
        if ema is None:
            ema = {k: v.clone() for k, v in raw.items()}
        else:
            ema = {k: (DECAY * ema[k] + (1 - DECAY) * v).to(v.dtype) for k, v in raw.items()}
        out[step] = ema
    assert sorted(out) == list(range(1, 9))
    return out


def _assert_equal(a: Weights, b: Weights) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7, msg=key)


def _differs(a: Weights, b: Weights) -> bool:
    return any(not torch.allclose(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_validation_during_training_uses_the_averaged_weights(full, manual_ema):
    assert sorted(full.validated) == [4, 8]  # after each epoch
    for step, weights in full.validated.items():
        _assert_equal(weights, manual_ema[step])
        assert _differs(weights, full.raw[step])


def test_best_checkpoint_holds_the_averaged_weights_and_the_raw_ones(full, manual_ema):
    ckpt = full.ckpt(full.metrics["best_checkpoint"])  # loads with weights_only=True
    step = ckpt["global_step"]
    _assert_equal(ckpt["state_dict"], manual_ema[step])  # what eval / predict / export load
    _assert_equal(ckpt["current_model_state"], full.raw[step])
    assert _differs(ckpt["state_dict"], ckpt["current_model_state"])
    assert int(ckpt["averaging_state"]["n_averaged"]) == step


def test_final_evaluation_uses_the_best_checkpoints_averaged_weights(full, manual_ema):
    step = full.ckpt(full.metrics["best_checkpoint"])["global_step"]
    assert full.evaluated.keys() == {"val", "test"}
    for weights in full.evaluated.values():
        _assert_equal(weights, manual_ema[step])


def test_eval_of_the_best_checkpoint_reproduces_the_training_runs_figures(full, runs):
    cfg = tiny_cfg("eval", [f"ckpt_path={full.metrics['best_checkpoint']}"], runs / "eval")
    metrics = pipeline.evaluate(cfg)
    assert metrics["val/confusion_matrix"] == full.metrics["val/confusion_matrix"]
    assert metrics["val/miou"] == full.metrics["val/miou"]


def test_resume_after_an_epoch_continues_the_average_exactly(full, runs):
    half = _train(runs, "half", "trainer.max_epochs=1")
    resumed = _train(runs, "resumed", f"ckpt_path={half.dir / 'checkpoints' / 'last.ckpt'}")
    a, b = full.ckpt(), resumed.ckpt()
    assert a["global_step"] == b["global_step"] == 8
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert a["callbacks"]["WeightEMA"] == b["callbacks"]["WeightEMA"]
    # The resumed epoch validated the same averaged weights, with the same figures.
    _assert_equal(resumed.validated[8], full.validated[8])
    assert torch.equal(resumed.confmats[8], full.confmats[8])


def test_resume_mid_epoch_continues_the_average_exactly(full, runs):
    """Ctrl+C before step 6 (epoch 1, batch 2 of 4), resumed from interrupted.ckpt."""
    with pytest.raises(SystemExit):
        _train(runs, "cut", "+callbacks.ctrl_c._target_=test_train.CtrlCAt")
    interrupted = runs / "cut" / "checkpoints" / "interrupted.ckpt"
    assert int(torch.load(interrupted, weights_only=True)["averaging_state"]["n_averaged"]) == 6
    resumed = _train(runs, "mid", f"ckpt_path={interrupted}")
    a, b = full.ckpt(), resumed.ckpt()
    for key in ("state_dict", "current_model_state", "averaging_state"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    _assert_equal(resumed.validated[8], full.validated[8])
    assert torch.equal(resumed.confmats[8], full.confmats[8])

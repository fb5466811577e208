"""Gradient accumulation (``trainer.accumulate_grad_batches=N``): the per-iteration schedule
steps once per optimizer step, so it ends at its last value on the run's last update.

3 batches an epoch with N=2 also covers an epoch's last, incomplete group: Lightning steps
the optimizer on an epoch's last batch, and counts that step in
``trainer.estimated_stepping_batches`` (the schedule's length).
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from seglab import pipeline
from seglab.optim import PolyLR

WARMUP = 2
ACCUMULATED = (
    "data.dataset.num_samples={train: 24, val: 7, test: 5}",  # 3 batches of 8 an epoch
    "trainer.accumulate_grad_batches=2",
    f"scheduler.warmup_steps={WARMUP}",
    "callbacks=[default,ema]",
    "++callbacks.visualizer=null",
    "+callbacks.steps._target_=test_accumulation.StepRecorder",
    "test=false",
)


class StepRecorder(L.Callback):
    """The learning rate each batch and each optimizer step ran with, and the schedule's
    state at the end of fit."""

    batch_lrs: list[float] = []
    step_lrs: list[float] = []
    end: dict[str, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        StepRecorder.batch_lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        StepRecorder.step_lrs.append(optimizer.param_groups[0]["lr"])

    def on_train_end(self, trainer, pl_module) -> None:
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        StepRecorder.end = {
            "global_step": trainer.global_step,
            "estimated": trainer.estimated_stepping_batches,
            "scheduler_steps": scheduler.last_epoch,
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
        }


def test_schedule_steps_once_per_optimizer_step(make_cfg):
    StepRecorder.batch_lrs, StepRecorder.step_lrs, StepRecorder.end = [], [], {}
    cfg = make_cfg("train", *ACCUMULATED)
    metrics = pipeline.train(cfg)
    end = StepRecorder.end
    # 2 epochs x (batches 1-2, batch 3 alone) = 4 updates, and the schedule is that long.
    assert end["global_step"] == end["estimated"] == 4
    assert len(StepRecorder.step_lrs) == 4
    assert end["scheduler_steps"] == 4
    base = cfg.optimizer.lr
    reference = instantiate(cfg.scheduler)(torch.optim.SGD([torch.zeros(1)], lr=base), 4)
    assert isinstance(reference, PolyLR)
    expected = [base * reference.factor(k) for k in range(5)]
    assert StepRecorder.step_lrs == pytest.approx(expected[:4], rel=1e-9)
    assert end["lr"] == 0.0  # poly's last value, reached at the last update
    # The batches of one group (and an epoch's last, alone) share its update's rate.
    assert StepRecorder.batch_lrs == pytest.approx(
        [expected[i] for i in (0, 0, 1, 2, 2, 3)], rel=1e-9
    )
    # The weights' EMA is updated once per optimizer step too.
    ckpt = torch.load(metrics["best_checkpoint"], weights_only=True)
    assert int(ckpt["averaging_state"]["n_averaged"]) == ckpt["global_step"]

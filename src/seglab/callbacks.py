"""Callbacks: prediction overlays (semantic and instance) and the confusion matrix (what the
model does), the checkpoint saved when a run is interrupted (SIGTERM, Ctrl+C), a
ModelCheckpoint whose last.ckpt is always the latest state, and the weights' EMA."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from seglab.errors import InputError
from seglab.module import logits_to_labels, split_output
from seglab.visualize import confusion_matrix_figure, denormalize, draw_instances, grid, overlay

log = logging.getLogger(__name__)


def readable_samples(dataset: Any, n: int) -> Iterator[dict[str, Any]]:
    """The first ``n`` samples of ``dataset`` that can be read: a bad file is skipped (as
    with ``data.on_bad_sample=skip``), so an overlay grid never stops a run."""
    for i in range(min(n, len(dataset))):
        try:
            yield dataset[i]
        except (ValueError, OSError):
            continue


class ModelCheckpoint(L.pytorch.callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint, except that ``last.ckpt`` is rewritten at the end of every
    checkpointing epoch. Lightning 2.6 rewrites it only in epochs that saved a top-k
    checkpoint, so after an epoch whose metric did not improve, ``last.ckpt`` would still be
    an older state, and a run killed then would resume from there and repeat epochs."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def _save_last_if_stale(self, trainer: L.Trainer) -> None:
        due = self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0
        if (
            self.save_last
            and due
            and not self._should_skip_saving_checkpoint(trainer)
            and self._last_global_step_saved != trainer.global_step
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class WeightEMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging`` (``conf/callbacks/ema.yaml``), acting during fit
    only. Lightning's own also reloads a checkpoint's raw weights when evaluating it after a
    fit, and swaps the average in for validation but not for testing, so
    ``trainer.test(ckpt_path=best)`` would test the raw weights. Outside fit the module keeps
    what it holds: a checkpoint's ``state_dict`` (the average), or after fit the average, as
    in eval.py."""

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_validation_epoch_end(trainer, pl_module)


class InterruptCheckpoint(L.Callback):
    """Stops training cleanly on SIGTERM (``kill``, preemption, a time limit) or Ctrl+C and
    saves ``<dirpath>/<filename>.ckpt``, from which ``ckpt_path=<file>`` resumes exactly.

    The signal handler only records the signal. At the start of the next training batch the
    ranks agree on it (an all-reduce of the signal number; one process: no collective) and
    every rank stops at the same step: ``SIGTERMException`` for SIGTERM, ``KeyboardInterrupt``
    for SIGINT. The save is then collective, through the trainer's CheckpointIO (atomic with
    ``AtomicCheckpointIO``), and holds the full training state (model, optimizer, scheduler,
    loops, the DataModule's position in the epoch). Lightning's own SIGTERM handler is
    replaced during training because it runs collectives inside the signal handler, which
    deadlocks when the signal lands while the ranks are in a different collective (during
    validation or a checkpoint save). A signal during validation takes effect at the next
    training batch.

    Ctrl+C is deferred to the next batch like SIGTERM (a KeyboardInterrupt raised at an
    arbitrary point can leave a lock held, e.g. a logger's, and hang the exit: seen once in a
    single process); a second Ctrl+C interrupts at once (under DDP rank 0 then saves alone).
    Nothing is saved on errors (a crash, a non-finite loss), whose state may be broken: the
    last checkpoint ModelCheckpoint wrote stays the last good one.

    Not a ``Checkpoint`` subclass on purpose: ``trainer.checkpoint_callback`` (the best
    checkpoint's source) and Lightning's default ModelCheckpoint are left as they were."""

    def __init__(self, dirpath: str | Path, filename: str = "interrupted") -> None:
        if not filename:
            raise InputError("InterruptCheckpoint: filename must not be empty")
        self.dirpath, self.filename = str(dirpath), filename
        self._signal = 0  # the signal received and not yet acted on (SIGTERM wins over SIGINT)
        self._agreed = False  # the ranks stopped together: the save may be collective

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + ".ckpt")

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self._signal:
            raise KeyboardInterrupt  # pressed again: stop now
        self._signal = max(self._signal, signum)

    def _take_over_signals(self) -> None:
        """Runs after Lightning registered its handlers, which it restores after fit."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over_signals()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take_over_signals()

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        signum = self._signal
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = torch.tensor([signum], device=trainer.strategy.root_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            signum = int(flag.item())
        if not signum:
            return
        self._agreed = True
        if signum == signal.SIGTERM:
            raise SIGTERMException
        raise KeyboardInterrupt

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            return
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return  # nothing to resume: evaluation only, or before the first training step
        what = "SIGTERM" if isinstance(exception, SIGTERMException) else "KeyboardInterrupt"
        if self._agreed or trainer.world_size == 1:
            trainer.save_checkpoint(self.ckpt_path)  # every rank is here: a collective save
        elif trainer.is_global_zero:
            # An immediate Ctrl+C reaches the ranks at different points, or only one of them:
            # the barrier in trainer.save_checkpoint could wait forever for a rank that never
            # comes. Rank 0 writes alone (DDP: it holds the full state); Lightning then stops
            # the other processes it started.
            checkpoint = trainer._checkpoint_connector.dump_checkpoint()
            trainer.strategy.save_checkpoint(checkpoint, self.ckpt_path)
        if trainer.is_global_zero:
            log.warning(
                "%s at epoch %d, step %d: saved %s; resume with ckpt_path=%s",
                what,
                trainer.current_epoch,
                trainer.global_step,
                self.ckpt_path,
                self.ckpt_path,
            )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """After a fit that ended normally, an older interrupted checkpoint in the same
        folder (a run resumed into its own folder) is stale: removed."""
        if stage == "fit" and trainer.is_global_zero and os.path.isfile(self.ckpt_path):
            trainer.strategy.remove_checkpoint(self.ckpt_path)


class SegmentationVisualizer(L.Callback):
    """After each validation epoch, logs to TensorBoard a grid of image / ground truth /
    prediction for a fixed set of validation samples (the first ``num_samples``, so progress
    is comparable across epochs), and the confusion-matrix figure. A task's visualizer
    overrides ``_row`` (one sample's images) and ``_log_figures``."""

    def __init__(self, num_samples: int = 6, every_n_epochs: int = 1, alpha: float = 0.5) -> None:
        self.num_samples, self.every_n_epochs, self.alpha = num_samples, every_n_epochs, alpha

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING  # not the final re-evaluation
        if not fitting or trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        writer, step = loggers[0].experiment, trainer.global_step
        image = self._grid(pl_module, trainer, trainer.datamodule)
        if image is not None:  # None: every sample shown was a bad file (skipped)
            writer.add_image("val/predictions", image, step, dataformats="HWC")
        self._log_figures(writer, pl_module, step)

    def _grid(self, pl_module, trainer, dm) -> np.ndarray | None:
        rows = []
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            for sample in readable_samples(dm.dataset("val"), self.num_samples):
                image = denormalize(sample["image"], dm.mean, dm.std)
                rows.append(self._row(pl_module, sample, image, dm))
        pl_module.train(was_training)
        return grid(rows) if rows else None

    def _row(self, pl_module, sample: dict[str, Any], image: np.ndarray, dm) -> list[np.ndarray]:
        """Image, ground truth and prediction overlays of one sample."""
        x = sample["image"].unsqueeze(0).to(pl_module.device)
        pred = logits_to_labels(split_output(pl_module(x))[0])[0].cpu().numpy()
        label = sample["mask"].numpy()
        return [
            image,
            overlay(image, label, dm.palette, self.alpha, dm.ignore_index),
            overlay(image, pred, dm.palette, self.alpha, dm.ignore_index),
        ]

    def _log_figures(self, writer: Any, pl_module: L.LightningModule, step: int) -> None:
        if "val" in pl_module.last_confmat:
            fig = confusion_matrix_figure(pl_module.last_confmat["val"], pl_module.class_names)
            writer.add_figure("val/confusion_matrix", fig, step)


class InstanceVisualizer(SegmentationVisualizer):
    """After each validation epoch, logs to TensorBoard a grid of image / ground truth /
    prediction for the first ``num_samples`` validation images: one colour per instance,
    with its class name (and score)."""

    def _row(self, pl_module, sample: dict[str, Any], image: np.ndarray, dm) -> list[np.ndarray]:
        out = pl_module.detections([sample["image"].to(pl_module.device)])[0]
        t, names = sample["target"], pl_module.class_names
        return [
            image,
            draw_instances(image, t["masks"].numpy(), t["labels"].tolist(), None, names, self.alpha),
            draw_instances(
                image, out["masks"].cpu().numpy(), out["labels"].tolist(),
                out["scores"].tolist(), names, self.alpha,
            ),
        ]  # fmt: skip

    def _log_figures(self, writer: Any, pl_module: L.LightningModule, step: int) -> None:
        """No figures beyond the grid (the instance task's metrics are AP tables)."""

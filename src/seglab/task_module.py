"""``TaskModule``: what every seglab task's LightningModule shares.

The semantic task (``seglab.module.SegmentationModule``) and the instance task
(``seglab.instance_module.InstanceModule``) differ in their steps and metrics only; the net
with its weights and frozen trunk, the optimizer and schedule, the non-finite-loss handling,
the training-loss logging and what a checkpoint holds live here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from seglab import provenance
from seglab.errors import InputError, SeglabError
from seglab.metrics import ConfusionMatrix
from seglab.models.pretrained import load_pretrained
from seglab.optim import param_groups, scale_group_lrs

log = logging.getLogger(__name__)

NONFINITE_LOSS_MODES = ("error", "skip")

# The evaluation config group (conf/evaluation/default.yaml); a checkpoint saved before the
# group existed gets these.
EVALUATION_DEFAULTS: dict[str, Any] = {
    "calibration_bins": 15,
    "boundary": True,
    "boundary_tolerance_px": 2,
    "boundary_dilation_ratio": 0.02,
    "per_image": True,
}


def evaluation_settings(given: dict[str, Any] | None) -> dict[str, Any]:
    """The evaluation group's values over ``EVALUATION_DEFAULTS``; an unknown key is refused."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(EVALUATION_DEFAULTS))
    if unknown:
        raise InputError(
            f"unknown evaluation setting(s) {unknown}; the evaluation group has "
            f"{sorted(EVALUATION_DEFAULTS)} (conf/evaluation/default.yaml)"
        )
    return {**EVALUATION_DEFAULTS, **given}


class NonFiniteLossError(SeglabError, FloatingPointError):
    """The training loss became NaN or infinite (``model.nonfinite_loss=error``)."""


class TaskModule(L.LightningModule):
    """What every seglab task's LightningModule shares: the net with its starting weights and
    frozen trunk, the classes, the optimizer with per-part learning rates and the per-iteration
    schedule, the non-finite-loss stop / skip, the evaluation confusion matrices, and the
    config and provenance saved into checkpoints."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None,
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        train_trunk: bool = True,
        lr_mult: dict[str, float] | None = None,
        nonfinite_loss: str = "error",
        evaluation: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if nonfinite_loss not in NONFINITE_LOSS_MODES:
            raise InputError(
                f"model.nonfinite_loss={nonfinite_loss!r}; use one of {NONFINITE_LOSS_MODES}"
            )
        # error: stop at the first NaN / inf training loss; skip: drop that batch's update.
        self.nonfinite_loss = nonfinite_loss
        self.skipped_steps = 0  # training steps skipped for a non-finite loss (skip mode)
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.train_trunk, self.lr_mult = train_trunk, lr_mult
        # What evaluations compute besides the confusion matrix (the semantic task reads it).
        self.evaluation = evaluation_settings(evaluation)
        # The resolved run config as plain containers, saved into every checkpoint so that
        # eval/predict rebuild exactly this model (and torch.load(weights_only=True) works).
        self.run_config: dict = {}
        self.metrics = nn.ModuleDict(
            {s: ConfusionMatrix(num_classes, ignore_index) for s in ("val", "test")}
        )
        self.last_confmat: dict[str, torch.Tensor] = {}
        self.last_results: dict[str, float] = {}
        # Training-loss sums (loss x images, and images) since the last logger write and
        # since the epoch's start, on the device: see _log_training_losses.
        self._loss_sums: dict[str, dict[str, torch.Tensor]] = {"window": {}, "epoch": {}}
        self._loss_images: dict[str, int] = {"window": 0, "epoch": 0}

    def load_initial_weights(self, pretrained: bool | str, weights_path: str | None) -> None:
        """The net's starting weights (``model.pretrained``: the encoder's ImageNet weights;
        ``model.weights_path``: a file), then its trunk frozen for ``model.train_trunk=false``."""
        self.loaded_weights = load_pretrained(self.net, pretrained, weights_path, self.num_classes)
        if not self.train_trunk:
            self.freeze_trunk()

    def freeze_trunk(self) -> None:
        """``model.train_trunk=false``: the net's encoder stops learning, its BatchNorm
        statistics included, for the whole run (``SegmentationNet.freeze_encoder``)."""
        self.net.freeze_encoder()

    def _nonfinite(
        self,
        loss: torch.Tensor,
        batch: dict[str, torch.Tensor],
        batch_idx: int,
        buffers: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor | None:
        """Stops the run (error) or skips this batch's update (skip) on a NaN / inf loss."""
        trainer = self.trainer
        lrs = [
            f"{group.get('name') or f'group {i}'}={group['lr']:.3g}"
            for opt in trainer.optimizers
            for i, group in enumerate(opt.param_groups)
        ]
        images = batch["image"]  # a tensor, or a list of images (instance task)
        images = images if isinstance(images, list | tuple) else [images]
        data_bad = not all(bool(torch.isfinite(x).all()) for x in images)
        where = (
            f"non-finite training loss ({float(loss.detach().float())}) at global step "
            f"{trainer.global_step} (epoch {trainer.current_epoch}, batch index {batch_idx}); "
            f"learning rate(s): {', '.join(lrs) or 'unknown'}"
            + ("; the input batch itself contains NaN / inf values" if data_bad else "")
        )
        if self.nonfinite_loss == "skip":
            with torch.no_grad():
                for buf, saved in buffers:
                    buf.copy_(saved)
            self.skipped_steps += 1
            log.warning(
                "%s: skipped this batch's update (model.nonfinite_loss=skip; %d skipped so far)",
                where,
                self.skipped_steps,
            )
            self.log("train/skipped_steps", float(self.skipped_steps), on_step=True)
            if trainer.world_size == 1:
                return None  # Lightning then makes no optimizer update for this batch
            # DDP cannot skip one process's step (the others wait in the gradient
            # all-reduce): this process contributes a zero gradient instead.
            return sum((p * 0).sum() for p in self.parameters() if p.requires_grad)
        ckpt_cb = trainer.checkpoint_callback
        last = getattr(ckpt_cb, "last_model_path", "") or getattr(ckpt_cb, "best_model_path", "")
        kept = (
            f"the last checkpoint saved, {last}, is the last good state"
            if last
            else "no checkpoint had been saved yet"
        )
        raise NonFiniteLossError(
            f"{where}. Training stopped before this step's update; {kept} (this state is not "
            "saved). Try: a lower learning rate (optimizer.lr=..., or a longer warmup, "
            "scheduler.warmup_steps=...), checking the data for bad values (python "
            f"src/check_data.py), full precision (trainer.precision=32; now "
            f"{trainer.precision}), or model.nonfinite_loss=skip to skip such batches."
        )

    # -- training-loss logging -----------------------------------------------------------
    def _log_training_losses(self, losses: dict[str, torch.Tensor], batch_size: int) -> None:
        """Logs each loss ``name`` as ``name_step``, its mean over the steps since the last
        write, on the steps Lightning's loggers write (``trainer.log_every_n_steps``), and as
        ``name_epoch``, the epoch's mean, at the epoch's end (both weighted by images).

        Why not ``self.log(name, on_step=True, on_epoch=True)`` every step: Lightning's
        ``log`` costs about 0.45 ms per call on CPU (it re-places the metric's state on the
        device every call), a third of what the Lightning loop adds to a step. Sums kept
        here cost a few microseconds and never wait for the device; every step still counts.
        """
        weighted = {name: value.detach().float() * batch_size for name, value in losses.items()}
        for scope, sums in self._loss_sums.items():
            for name, v in weighted.items():
                sums[name] = sums[name] + v if name in sums else v
            self._loss_images[scope] += batch_size
        trainer = self.trainer
        # Lightning's own test for "the loggers write at this step" (log_every_n_steps;
        # every step in fast_dev_run); a value logged at other steps would reach only the
        # progress bar.
        if trainer.fast_dev_run or trainer._logger_connector.should_update_logs:
            for name, mean in self._take_loss_means("window").items():
                bar = name == "train/loss"
                self.log(f"{name}_step", mean, on_step=True, on_epoch=False, prog_bar=bar)

    def on_train_epoch_end(self) -> None:
        for name, mean in self._take_loss_means("epoch").items():
            bar = name == "train/loss"
            self.log(f"{name}_epoch", mean, on_epoch=True, prog_bar=bar, sync_dist=True)

    def _take_loss_means(self, scope: str) -> dict[str, torch.Tensor]:
        """Each loss's mean over ``scope`` ("window" or "epoch"), which then starts afresh."""
        images = self._loss_images[scope]
        means = {name: total / images for name, total in self._loss_sums[scope].items()}
        self._loss_sums[scope], self._loss_images[scope] = {}, 0
        return means

    def on_train_end(self) -> None:
        if self.skipped_steps:
            log.warning(
                "%d training step(s) were skipped because of a non-finite loss "
                "(model.nonfinite_loss=skip)",
                self.skipped_steps,
            )

    # -- optimisation --------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizer = scale_group_lrs(self.optimizer_factory(param_groups(self.net, self.lr_mult)))
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, total_steps=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["seglab_config"] = self.run_config
        checkpoint["seglab_provenance"] = provenance.collect(self.run_config.get("seed"))
        checkpoint["seglab_skipped_steps"] = self.skipped_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = int(checkpoint.get("seglab_skipped_steps", 0))

"""``SegmentationModule``: the one LightningModule that trains every architecture.

The architecture (``model.net``) is a plain ``nn.Module``; everything about training lives
here: loss (with an optional auxiliary head), optimizer with per-part learning rates,
per-iteration schedule, trunk freezing, and metrics from one confusion matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric

from seglab import provenance
from seglab.inference import Inferer
from seglab.metrics import ConfusionMatrix, metrics_from_confmat
from seglab.models.pretrained import load_pretrained
from seglab.optim import param_groups, scale_group_lrs

log = logging.getLogger(__name__)

NONFINITE_LOSS_MODES = ("error", "skip")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite (``model.nonfinite_loss=error``)."""


def split_output(out: torch.Tensor | dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
    """Nets return logits, or a dict with ``"out"`` and optionally ``"aux"`` logits."""
    if isinstance(out, dict):
        return out["out"], out.get("aux")
    return out, None


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast context of a Lightning precision string outside the Trainer (predict,
    benchmark): bf16 for "bf16-*", fp16 for "16-*" on CUDA only, else none."""
    if "bf16" in precision:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16") and device.type == "cuda":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def logits_to_labels(logits: torch.Tensor) -> torch.Tensor:
    """Class indices; a single-channel (binary) net predicts class 1 where its logit > 0."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


class SeglabModule(L.LightningModule):
    """What every seglab task's LightningModule shares: the net with its weights and frozen
    trunk, the classes, the optimizer with per-part learning rates and the per-iteration
    schedule, the non-finite-loss stop / skip, the evaluation confusion matrices, and the
    config and provenance saved into checkpoints."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None,
        *,
        num_classes: int,
        class_names: Sequence[str] | None,
        ignore_index: int,
        train_trunk: bool,
        lr_mult: dict[str, float] | None,
        nonfinite_loss: str,
    ) -> None:
        super().__init__()
        if nonfinite_loss not in NONFINITE_LOSS_MODES:
            raise ValueError(
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

    def _load_weights(self, pretrained: bool | str, weights_path: str | None) -> None:
        """Pretrained / local weights into the net, then the trunk frozen if asked."""
        self.loaded_weights = load_pretrained(self.net, pretrained, weights_path, self.num_classes)
        if self.train_trunk:
            return
        trunk = getattr(self.net, "encoder", None)
        if not isinstance(trunk, nn.Module):
            raise ValueError(
                f"model.train_trunk=false, but {type(self.net).__name__} has no .encoder to "
                "freeze; set model.train_trunk=true"
            )
        trunk.requires_grad_(False)
        trunk.eval()

    def train(self, mode: bool = True) -> SeglabModule:
        """Keeps a frozen trunk in eval mode so its BatchNorm statistics stay fixed."""
        super().train(mode)
        if not self.train_trunk:
            self.net.encoder.eval()
        return self

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


class SegmentationModule(SeglabModule):
    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        in_channels: int = 3,
        train_trunk: bool = True,
        pretrained: bool | str = False,
        weights_path: str | None = None,
        lr_mult: dict[str, float] | None = None,
        aux_weight: float = 0.4,
        channels_last: bool = False,
        inference: dict[str, Any] | None = None,
        compile: bool = False,
        cpu_bf16: bool = True,  # read by trainer.precision's default (conf/trainer), not here
        encoder: str | None = None,  # read by the net (net.encoder: ${model.encoder}), not here
        nonfinite_loss: str = "error",
    ) -> None:
        super().__init__(
            net,
            optimizer,
            scheduler,
            num_classes=num_classes,
            class_names=class_names,
            ignore_index=ignore_index,
            train_trunk=train_trunk,
            lr_mult=lr_mult,
            nonfinite_loss=nonfinite_loss,
        )
        self.loss, self.aux_weight, self.channels_last = loss, aux_weight, channels_last
        self.inferer = Inferer(**(inference or {}))
        self._check_output_channels(in_channels)
        self._load_weights(pretrained, weights_path)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:  # in place: parameter names (and so checkpoints) stay the same
            # A net may ask for static shapes (``compile_dynamic = False``): each new input
            # size then compiles again, instead of symbolic shapes that never finish.
            self.net.compile(dynamic=getattr(self.net, "compile_dynamic", None))
        self.miou_best = MaxMetric()

    # -- set-up checks -------------------------------------------------------------------
    def _check_output_channels(self, in_channels: int) -> None:
        """Fails before training when the net's output disagrees with the data's classes."""
        was_training = self.net.training
        self.net.eval()
        with torch.no_grad():
            logits, _ = split_output(self.net(torch.zeros(1, in_channels, 64, 64)))
        self.net.train(was_training)
        channels = logits.shape[1]
        if channels != self.num_classes and not (channels == 1 and self.num_classes == 2):
            raise ValueError(
                f"{type(self.net).__name__} outputs {channels} channels but the data has "
                f"num_classes={self.num_classes}. Leave model.net.num_classes at its default "
                "${data.num_classes} (or 1 for a binary net trained with loss=bce)."
            )
        if tuple(logits.shape[-2:]) != (64, 64):
            raise ValueError(
                f"{type(self.net).__name__} returned logits of size {tuple(logits.shape[-2:])} "
                "for a 64x64 input; nets must return logits at the input's resolution"
            )

    # -- forward and loss ----------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _loss(self, out: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, aux = split_output(out)
        loss = self.loss(logits, target)
        if aux is not None and self.aux_weight:
            aux = F.interpolate(aux, size=target.shape[-2:], mode="bilinear", align_corners=False)
            loss = loss + self.aux_weight * self.loss(aux, target)
        return loss, logits

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        skip = self.nonfinite_loss == "skip"
        # Skip mode: the forward pass updates BatchNorm running statistics, which a NaN batch
        # would poison even though its optimizer step is skipped; keep a copy to restore
        # (the buffers are small next to the activations).
        buffers = [(b, b.detach().clone()) for b in self.net.buffers()] if skip else []
        loss, _ = self._loss(self(batch["image"]), batch["mask"])
        # Reading the result of isfinite on the host waits for the forward pass to finish (a
        # device-to-host sync once per step): free on CPU; on a GPU it stalls the launch
        # queue until the forward is done, a small cost next to the step for these models,
        # and the progress bar already reads the logged loss every step.
        if not bool(torch.isfinite(loss)):
            return self._nonfinite(loss, batch, batch_idx, buffers)
        if skip:
            self.log("train/skipped_steps", float(self.skipped_steps), on_step=True)
        self._log_training_losses({"train/loss": loss}, batch["image"].shape[0])
        return loss

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Main-head logits of one pass (what the inferer calls per window / view)."""
        return split_output(self(x))[0]

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        x, target = batch["image"], batch["mask"]
        if self.inferer.is_plain:
            loss, logits = self._loss(self(x), target)
        else:  # sliding window and / or test-time augmentation (main head only)
            logits = self.inferer(self.logits, x)
            loss = self.loss(logits, target)
        self.metrics[stage].update(logits_to_labels(logits), target)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=x.shape[0],
        )

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return logits_to_labels(self.inferer(self.logits, batch["image"]))

    # -- metrics -------------------------------------------------------------------------
    def _log_epoch_metrics(self, stage: str) -> dict[str, float]:
        confmat = self.metrics[stage].compute()  # summed over processes
        self.metrics[stage].reset()
        m = metrics_from_confmat(confmat)
        results = {
            f"{stage}/miou": m["mIoU"],
            f"{stage}/aacc": m["aAcc"],
            f"{stage}/macc": m["mAcc"],
            f"{stage}/mdice": m["mDice"],
        }
        for i, name in enumerate(self.class_names):
            results[f"{stage}/iou/{name}"] = m["IoU"][i]
            results[f"{stage}/acc/{name}"] = m["Acc"][i]
        for key, value in results.items():
            # Identical on every rank already: no further reduction needed.
            self.log(key, value.float(), prog_bar=key.endswith("/miou"))
        self.last_confmat[stage] = confmat.cpu()
        self.last_results.update({k: float(v) for k, v in results.items()})
        return results

    def on_validation_epoch_end(self) -> None:
        results = self._log_epoch_metrics("val")
        if not self.trainer.sanity_checking:
            self.miou_best(results["val/miou"].to(self.device))
            self.log("val/miou_best", self.miou_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

"""``SegmentationModule``: the LightningModule that trains every semantic-segmentation net.

The architecture (``model.net``) is a plain ``nn.Module``; this adds the semantic task to
what every task shares (``seglab.task_module.TaskModule``): the loss (with an optional
auxiliary head), the configured inference (sliding window, test-time augmentation) and the
metrics from one confusion matrix, the calibration figures (ECE, NLL, Brier), the boundary
metrics (BF, Boundary IoU) and each image's confusion matrix. Also the helpers that turn a
net's output into labels outside the Trainer (prediction, export, benchmark).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric

from seglab.boundary import BoundaryStats
from seglab.calibration import CalibrationStats
from seglab.inference import Inferer
from seglab.metrics import metrics_from_confmat
from seglab.per_image import PerImageConfusion
from seglab.task_module import TaskModule


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


class SegmentationModule(TaskModule):
    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        *,
        in_channels: int = 3,
        pretrained: bool | str = False,
        weights_path: str | None = None,
        aux_weight: float = 0.4,
        channels_last: bool = False,
        inference: dict[str, Any] | None = None,
        compile: bool = False,
        **task: Any,
    ) -> None:
        """``task``: what every task takes (``TaskModule``: ``num_classes``, ``class_names``,
        ``ignore_index``, ``train_trunk``, ``lr_mult``, ``nonfinite_loss``)."""
        super().__init__(net, optimizer, scheduler, **task)
        self.loss, self.aux_weight, self.channels_last = loss, aux_weight, channels_last
        self.inferer = Inferer(**(inference or {}))
        self._check_output_channels(in_channels)
        self.load_initial_weights(pretrained, weights_path)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        if compile:  # in place: parameter names (and so checkpoints) stay the same
            # A net may ask for static shapes (``compile_dynamic = False``): each new input
            # size then compiles again, instead of symbolic shapes that never finish.
            self.net.compile(dynamic=getattr(self.net, "compile_dynamic", None))
        self.miou_best = MaxMetric()
        # Probabilities are softmax(logits / temperature) (src/calibrate.py fits it; eval.py
        # and predict.py set it); the argmax labels do not depend on it.
        self.temperature = 1.0
        self._build_evaluation_metrics()

    def _build_evaluation_metrics(self) -> None:
        """Per stage, what ``self.evaluation`` (the evaluation config group) asks for."""
        ev, c, ignore = self.evaluation, self.num_classes, self.ignore_index
        stages = ("val", "test")
        bins = int(ev["calibration_bins"])
        self.calibration = nn.ModuleDict({s: CalibrationStats(c, ignore, bins) for s in stages})
        self.boundary = None
        if ev["boundary"]:
            ratio, tol = ev["boundary_dilation_ratio"], ev["boundary_tolerance_px"]
            self.boundary = nn.ModuleDict({s: BoundaryStats(c, ignore, ratio, tol) for s in stages})
        # Only final evaluations (Trainer.validate / test) collect these: see _eval_step.
        self.per_image = {s: PerImageConfusion(c, ignore) for s in stages}
        self.last_reliability: dict[str, dict] = {}
        self.last_per_image: dict[str, tuple] = {}

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
        if self.inferer.is_plain and self.inferer.fits_whole(self.logits, x):
            loss, logits = self._loss(self(x), target)
        else:  # sliding window and / or test-time augmentation (main head only)
            logits = self.inferer(self.logits, x)
            loss = self.loss(logits, target)
        labels = logits_to_labels(logits)
        self.metrics[stage].update(labels, target)
        self.calibration[stage].update(logits, target, self.temperature)
        if self.boundary is not None:
            self.boundary[stage].update(labels, target, batch.get("size"))
        if self._collect_per_image() and "index" in batch:
            self.per_image[stage].update(labels, target, batch["index"])
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            sync_dist=True,
            batch_size=x.shape[0],
        )

    def _collect_per_image(self) -> bool:
        """Each image's confusion matrix: in final evaluations, not validation while fitting."""
        return bool(self.evaluation["per_image"]) and self.trainer.state.fn != "fit"

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
        results.update(self._extra_epoch_metrics(stage))
        for key, value in results.items():
            # Identical on every rank already: no further reduction needed.
            self.log(key, value.float(), prog_bar=key.endswith("/miou"))
        self.last_confmat[stage] = confmat.cpu()
        self.last_results.update({k: float(v) for k, v in results.items()})
        return results

    def _extra_epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """Calibration and boundary figures (summed over processes), and each image's
        confusion matrix (gathered from every process) when this evaluation collected them."""
        cal = self.calibration[stage].compute()
        self.calibration[stage].reset()
        results = {f"{stage}/{k}": cal[k] for k in ("ece", "nll", "brier")}
        keys = ("bin_count", "bin_confidence", "bin_accuracy")
        self.last_reliability[stage] = {k: cal[k] for k in keys}
        if self.boundary is not None:
            b = self.boundary[stage].compute()
            self.boundary[stage].reset()
            for kind in ("biou", "bf"):
                # m<kind>: the mean, as miou (MLflow cannot hold val/biou beside val/biou/<c>)
                results[f"{stage}/m{kind}"] = b[kind]
                for name, value in zip(self.class_names, b[f"{kind}_per_class"], strict=True):
                    results[f"{stage}/{kind}/{name}"] = value
        if self._collect_per_image():
            self.last_per_image[stage] = self.per_image[stage].gather()
            self.per_image[stage].reset()
        return {k: torch.tensor(float(v), dtype=torch.float64) for k, v in results.items()}

    def on_validation_epoch_end(self) -> None:
        results = self._log_epoch_metrics("val")
        if not self.trainer.sanity_checking:
            self.miou_best(results["val/miou"].to(self.device))
            self.log("val/miou_best", self.miou_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

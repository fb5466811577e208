"""``InstanceModule``: instance segmentation as a seglab task (``task=instance``).

It trains a detection net (``seglab.models.maskrcnn``) on its own loss dict (every term
logged) with the optimizer, schedule, non-finite-loss handling and checkpoint contents every
seglab task shares (``seglab.task_module.TaskModule``). Validation and test compute COCO box
and mask AP with pycocotools (``seglab.coco_eval``): each process keeps its images' records,
rank 0 gathers them and evaluates every real image once, and the figures are broadcast so
every process logs the same values (``val/mask_ap`` is the checkpoint monitor). The same
pass pastes the instance masks (lowest score first, so the most confident instance ends on
top) onto a class map and counts it into seglab's ``ConfusionMatrix`` against the ground
truth's class map (crowd regions ignored): the ``miou`` / ``iou/<class>`` figures of a
semantic run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchmetrics import MaxMetric

from seglab import coco_eval
from seglab.errors import InputError
from seglab.metrics import metrics_from_confmat
from seglab.task_module import TaskModule


def paste(
    masks: torch.Tensor,
    labels: torch.Tensor,
    scores: torch.Tensor | None,
    shape: tuple[int, int],
    crowd: torch.Tensor | None = None,
    ignore_index: int = 255,
) -> torch.Tensor:
    """A class map (H x W, long) from instance masks (N x H x W bool): instances painted in
    increasing score (the most confident on top; ground truth in its order), crowd regions
    set to ``ignore_index`` last."""
    label = torch.zeros(shape, dtype=torch.long, device=masks.device)
    order = torch.argsort(scores, stable=True) if scores is not None else range(len(masks))
    for i in order:
        if crowd is not None and bool(crowd[i]):
            continue
        label[masks[i]] = labels[i]
    if crowd is not None:
        for i in torch.nonzero(crowd).flatten().tolist():
            label[masks[i]] = ignore_index
    return label


class InstanceModule(TaskModule):
    """Mask R-CNN training on its own loss dict, COCO AP evaluation, and class maps pasted
    from the instances for the semantic figures."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        *,
        in_channels: int = 3,
        pretrained: bool | str = False,
        weights_path: str | None = None,
        mask_threshold: float = 0.5,
        paste_score_thresh: float = 0.5,
        inference: dict[str, Any] | None = None,
        **task: Any,
    ) -> None:
        """``task``: what every task takes (``TaskModule``: ``num_classes``, ``class_names``,
        ``ignore_index``, ``train_trunk``, ``lr_mult``, ``nonfinite_loss``)."""
        super().__init__(net, optimizer, scheduler, **task)
        if in_channels != 3:
            raise InputError(
                f"task=instance: the Mask R-CNN models take RGB images; data.in_channels="
                f"{in_channels} is not supported (set data.in_channels=3)"
            )
        inf = inference or {}
        if (
            inf.get("mode", "whole") != "whole"
            or inf.get("flip")
            or inf.get("scales", [1.0]) != [1.0]
        ):
            raise InputError(
                "task=instance: sliding-window / test-time-augmentation inference is not "
                "supported (the model resizes each image itself); use inference=default"
            )
        self.mask_threshold, self.paste_score_thresh = mask_threshold, paste_score_thresh
        self.load_initial_weights(pretrained, weights_path)
        self.mask_ap_best = MaxMetric()
        self.records: dict[str, list[dict[str, Any]]] = {"val": [], "test": []}

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.net(images)

    # -- training ------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        images = batch["image"]
        targets = [{k: t[k] for k in ("boxes", "labels", "masks")} for t in batch["target"]]
        skip = self.nonfinite_loss == "skip"
        buffers = [(b, b.detach().clone()) for b in self.net.buffers()] if skip else []
        losses = self.net(images, targets)
        loss = sum(losses.values())
        if not bool(torch.isfinite(loss)):
            return self._nonfinite(loss, batch, batch_idx, buffers)
        terms = {f"train/{key}": value for key, value in losses.items()}
        self._log_training_losses(terms | {"train/loss": loss}, len(images))
        return loss

    # -- evaluation ----------------------------------------------------------------------
    def detections(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """The net's detections with binary masks (N x H x W bool) at each image's size."""
        outs = self.net(images)
        for out in outs:
            out["masks"] = out["masks"][:, 0] > self.mask_threshold
        return outs

    def _eval_step(self, batch: dict[str, Any], stage: str) -> None:
        images, targets = batch["image"], batch["target"]
        outs = self.detections(images)
        for image, target, out, image_id in zip(
            images, targets, outs, batch["image_id"].tolist(), strict=True
        ):
            h, w = image.shape[-2:]
            self.records[stage].append(
                coco_eval.image_record(
                    image_id,
                    h,
                    w,
                    target["masks"].bool().cpu().numpy(),
                    target["labels"].tolist(),
                    target["iscrowd"].tolist(),
                    target["area"].tolist(),
                    out["masks"].cpu().numpy(),
                    out["labels"].tolist(),
                    out["scores"].tolist(),
                    out["boxes"].cpu().numpy(),
                )
            )
            keep = out["scores"] >= self.paste_score_thresh
            pred = paste(out["masks"][keep], out["labels"][keep], out["scores"][keep], (h, w))
            gt = paste(
                target["masks"].bool(),
                target["labels"],
                None,
                (h, w),
                target["iscrowd"],
                self.ignore_index,
            )
            self.metrics[stage].update(pred[None], gt[None])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _gathered(self, stage: str) -> list[dict[str, Any]]:
        records, self.records[stage] = self.records[stage], []
        if dist.is_available() and dist.is_initialized() and self.trainer.world_size > 1:
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, records)
            records = [r for part in parts for r in part]
        return records

    def _log_epoch_metrics(self, stage: str) -> dict[str, float]:
        confmat = self.metrics[stage].compute()  # summed over processes
        self.metrics[stage].reset()
        records = self._gathered(stage)
        results: dict[str, float] | None = None
        if self.trainer.is_global_zero:
            results = coco_eval.evaluate(records, self.class_names, f"{stage}/")
            results[f"{stage}/num_images"] = float(len({r["id"] for r in records}))
        results = self.trainer.strategy.broadcast(results, src=0)
        m = metrics_from_confmat(confmat)
        results[f"{stage}/miou"] = float(m["mIoU"])
        results[f"{stage}/aacc"] = float(m["aAcc"])
        results[f"{stage}/macc"] = float(m["mAcc"])
        for i, name in enumerate(self.class_names):
            results[f"{stage}/iou/{name}"] = float(m["IoU"][i])
        for key, value in results.items():
            # Identical on every rank already: no further reduction needed.
            self.log(key, value, prog_bar=key.endswith("/mask_ap"))
        self.last_confmat[stage] = confmat.cpu()
        self.last_results.update(results)
        return results

    def on_validation_epoch_end(self) -> None:
        results = self._log_epoch_metrics("val")
        ap = results.get("val/mask_ap", math.nan)
        if not self.trainer.sanity_checking and math.isfinite(ap):
            self.mask_ap_best(torch.tensor(ap, device=self.device))
            self.log("val/mask_ap_best", self.mask_ap_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

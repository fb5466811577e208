"""Instance segmentation as a seglab task (``task=instance``): the LightningModule, its
TensorBoard overlays, the end-of-run AP table and prediction.

``InstanceModule`` trains a detection net (``seglab.models.maskrcnn``) on its own loss dict
(every term logged) with the optimizer, schedule, non-finite-loss handling and checkpoint
contents every seglab task shares (``seglab.module.SeglabModule``). Validation and test
compute COCO box and mask AP with pycocotools (``seglab.coco_eval``): each process keeps its
images' records, rank 0 gathers them and evaluates every real image once, and the figures
are broadcast so every process logs the same values (``val/mask_ap`` is the checkpoint
monitor). The same pass pastes the instance masks (lowest score first, so the most confident
instance ends on top) onto a class map and counts it into seglab's ``ConfusionMatrix``
against the ground truth's class map (crowd regions ignored): the ``miou`` / ``iou/<class>``
figures of a semantic run.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torchmetrics import MaxMetric

from seglab import coco_eval
from seglab.callbacks import SegmentationVisualizer
from seglab.metrics import metrics_from_confmat
from seglab.module import SeglabModule

log = logging.getLogger(__name__)


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


class InstanceModule(SeglabModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        loss: Any = None,  # the model's own loss dict is the loss: the loss group is unused
        *,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        in_channels: int = 3,
        train_trunk: bool = True,
        pretrained: bool | str = False,
        weights_path: str | None = None,
        lr_mult: dict[str, float] | None = None,
        mask_threshold: float = 0.5,
        paste_score_thresh: float = 0.5,
        inference: dict[str, Any] | None = None,
        cpu_bf16: bool = False,  # read by trainer.precision's default (conf/trainer), not here
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
        if in_channels != 3:
            raise ValueError(
                f"task=instance: the Mask R-CNN models take RGB images; data.in_channels="
                f"{in_channels} is not supported (set data.in_channels=3)"
            )
        inf = inference or {}
        if (
            inf.get("mode", "whole") != "whole"
            or inf.get("flip")
            or inf.get("scales", [1.0]) != [1.0]
        ):
            raise ValueError(
                "task=instance: sliding-window / test-time-augmentation inference is not "
                "supported (the model resizes each image itself); use inference=default"
            )
        self.mask_threshold, self.paste_score_thresh = mask_threshold, paste_score_thresh
        self._load_weights(pretrained, weights_path)
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


# ---------------------------------------------------------------------------- pictures
def instance_colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated colours (golden-ratio hues), one per instance."""
    out = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((0.1 + i * 0.618034) % 1.0, 0.85, 1.0)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def draw_instances(
    image: np.ndarray,
    masks: np.ndarray,
    labels: Sequence[int],
    scores: Sequence[float] | None,
    class_names: Sequence[str],
    alpha: float = 0.5,
) -> np.ndarray:
    """The image with each instance in its own colour, its outline, and its class name (and
    score) at its top-left corner."""
    import cv2

    out = image.astype(np.float32).copy()
    colours = instance_colours(len(masks))
    for m, c in zip(masks, colours, strict=True):
        m = m.astype(bool)
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(c, np.float32)
    out = out.round().clip(0, 255).astype(np.uint8)
    scale = max(0.3, min(image.shape[:2]) / 400)
    for k, (m, c) in enumerate(zip(masks, colours, strict=True)):
        m8 = m.astype(np.uint8)
        if not m8.any():
            continue
        contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, c, 1)
        ys, xs = np.nonzero(m8)
        name = class_names[int(labels[k])] if int(labels[k]) < len(class_names) else "?"
        text = name if scores is None else f"{name} {float(scores[k]):.2f}"
        org = (int(xs.min()), max(int(ys.min()) - 2, 8))
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, c, 1, cv2.LINE_AA)
    return out


class InstanceVisualizer(SegmentationVisualizer):
    """After each validation epoch, logs to TensorBoard a grid of image / ground truth /
    prediction for the first ``num_samples`` validation images: one colour per instance,
    with its class name (and score)."""

    def __init__(
        self, num_samples: int = 6, every_n_epochs: int = 1, alpha: float = 0.5, **_: Any
    ) -> None:
        super().__init__(num_samples, every_n_epochs, alpha)

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


# ------------------------------------------------------------------------------ report
def print_instance_table(metrics: dict[str, Any], class_names: Sequence[str], stage: str) -> None:
    """Per-class box and mask AP, then the COCO summary figures, as a rich table."""
    from rich.console import Console
    from rich.table import Table

    def fmt(v: Any) -> str:
        return "-" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"

    table = Table(title=f"{stage} instance metrics (COCO AP, %)")
    for col in ("class", "box AP", "mask AP", "IoU (pasted)"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name in class_names[1:]:
        table.add_row(
            name,
            fmt(metrics.get(f"{stage}/bbox_ap/{name}")),
            fmt(metrics.get(f"{stage}/mask_ap/{name}")),
            fmt(metrics.get(f"{stage}/iou/{name}")),
        )
    table.add_section()
    for key in coco_eval.SUMMARY:
        label = {"ap": "AP", "ap50": "AP50", "ap75": "AP75"}.get(key, f"AP{key[-1]}")
        table.add_row(
            label,
            fmt(metrics.get(f"{stage}/bbox_{key}")),
            fmt(metrics.get(f"{stage}/mask_{key}")),
            "",
        )
    table.add_row("mIoU (pasted masks)", "", "", fmt(metrics.get(f"{stage}/miou")))
    Console().print(table)


# ----------------------------------------------------------------------------- predict
def is_instance_run(run: dict[str, Any]) -> bool:
    return str(run.get("model", {}).get("_target_", "")).endswith(".InstanceModule")


def predict(cfg: Any) -> list[Path]:
    """Writes ``<name>_overlay.png`` (one colour per instance, class name and score) for
    every image under ``cfg.input`` at the image's own size; with ``instance_masks=true``
    also ``<name>_instances/<k>_<class>.png`` (0/255, one per detection, by score); with
    ``coco_json=<file>`` the detections as a COCO results JSON (image ids: the file name's
    number when it is one, as COCO's, else the image's position in the sorted list)."""
    from PIL import Image
    from rich.progress import Progress

    from seglab import guards
    from seglab.data.readers import read_image
    from seglab.module import autocast
    from seglab.pipeline import _list_images, build_module, load_checkpoint

    if cfg.get("onnx_path"):
        raise ValueError("task=instance: ONNX prediction is not supported; pass ckpt_path")
    ckpt = load_checkpoint(cfg.ckpt_path)
    from omegaconf import OmegaConf

    run = OmegaConf.create(ckpt["seglab_config"])
    module = build_module(run, from_checkpoint=True)
    module.load_state_dict(ckpt["state_dict"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device).eval()
    precision = str(cfg.get("precision") or run.trainer.get("precision", "32-true"))
    score_thresh = cfg.get("score_thresh")
    score_thresh = module.paste_score_thresh if score_thresh is None else float(score_thresh)
    mean = np.asarray(run.data.mean, np.float32)
    std = np.asarray(run.data.std, np.float32)
    in_root, out_root = Path(cfg.input), Path(cfg.output)
    paths = _list_images(in_root)
    out_root.mkdir(parents=True, exist_ok=True)
    written, failed, results = [], [], []
    with Progress(disable=not cfg.get("progress", True)) as progress:
        task = progress.add_task("predicting", total=len(paths))
        for pos, path in enumerate(paths):
            progress.advance(task)
            try:
                image = read_image(path, 3)
            except Exception as err:
                failed.append((path, err))
                continue
            x = torch.from_numpy(((image / 255.0 - mean) / std).astype(np.float32))
            x = x.permute(2, 0, 1).to(device)
            try:
                with torch.no_grad(), autocast(precision, device):
                    out = module.detections([x])[0]
            except Exception as err:
                step = {"stage": "prediction", "shape": tuple(x.shape), "batch_size": 1}
                guards.raise_if_oom(err, step | {"run": ckpt["seglab_config"]})
                raise
            keep = out["scores"] >= score_thresh
            masks = out["masks"][keep].cpu().numpy()
            labels, scores = out["labels"][keep].tolist(), out["scores"][keep].tolist()
            boxes = out["boxes"][keep].float().cpu().numpy()
            rel = path.relative_to(in_root).with_suffix("") if in_root.is_dir() else Path(path.stem)
            target = out_root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            drawn = draw_instances(
                image, masks, labels, scores, module.class_names, cfg.get("alpha", 0.5)
            )
            overlay_path = target.with_name(target.name + "_overlay.png")
            Image.fromarray(drawn).save(overlay_path)
            written.append(overlay_path)
            if cfg.get("instance_masks", False):
                folder = target.with_name(target.name + "_instances")
                folder.mkdir(exist_ok=True)
                for k, m in enumerate(masks):
                    name = module.class_names[labels[k]].replace(" ", "_")
                    Image.fromarray(m.astype(np.uint8) * 255).save(folder / f"{k:03d}_{name}.png")
            if cfg.get("coco_json"):
                image_id = int(path.stem) if path.stem.isdigit() else pos
                for d in coco_eval.image_record(
                    image_id, *image.shape[:2], np.zeros((0, 1, 1)), [], [], None,
                    masks, labels, scores, boxes,
                )["det"]:  # fmt: skip
                    results.append({"image_id": image_id, "file_name": str(rel), **d})
    if cfg.get("coco_json"):
        path = Path(cfg.coco_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results))
        log.info("wrote %d detections (COCO results format) to %s", len(results), path)
    log.info("wrote %d instance overlays to %s", len(written), out_root)
    for path, err in failed:
        log.error("could not read %s: %s", path, err)
    return written

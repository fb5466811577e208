"""Semantic prediction: a palette PNG mask and an overlay for every image, from a checkpoint
or from an ONNX file written by ``export.py``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image
from rich.progress import Progress

from seglab.checkpoints import module_from_checkpoint
from seglab.config import plain
from seglab.export import onnx_predictor
from seglab.inference import Inferer
from seglab.module import autocast, logits_to_labels
from seglab.out_of_memory import raise_if_oom
from seglab.prediction_io import (
    MASK,
    OVERLAY,
    OutputPlan,
    image_loader,
    on_device,
    raise_if_unreadable,
)
from seglab.visualize import overlay

log = logging.getLogger(__name__)

Labeller = Callable[[torch.Tensor], np.ndarray]


def checkpoint_labeller(cfg: DictConfig, ckpt: dict[str, Any]) -> tuple[dict[str, Any], Labeller]:
    """The data facts and an image batch -> class ids function from a checkpoint (with this
    command's inference, if it sets one)."""
    run = OmegaConf.create(ckpt["seglab_config"])
    if cfg.get("inference"):
        with open_dict(run):
            run.inference = cfg.inference
    module, run = module_from_checkpoint(ckpt, run, path=cfg.ckpt_path)
    device, precision = on_device(module, cfg, run)

    def to_labels(x: torch.Tensor) -> np.ndarray:
        x = x.to(device)
        with torch.no_grad(), autocast(precision, device):
            return logits_to_labels(module.inferer(module.logits, x)).cpu().numpy()

    to_labels.run, to_labels.precision = plain(run), precision  # for an out-of-memory error
    return OmegaConf.to_container(run.data, resolve=True), to_labels


def onnx_labeller(cfg: DictConfig, data: dict[str, Any]) -> tuple[dict[str, Any], Labeller]:
    """The same from an ONNX file written by ``export.py`` (``data``: its metadata, read
    first by ``read_onnx_metadata`` to check the file before anything else); onnxruntime
    runs in fp32 under the configured inference (slide, TTA)."""
    inference = cfg.get("inference")
    inferer = Inferer(**(OmegaConf.to_container(inference, resolve=True) if inference else {}))
    predict = onnx_predictor(cfg.onnx_path)

    def to_labels(x: torch.Tensor) -> np.ndarray:
        return logits_to_labels(inferer(predict, x)).numpy()

    return data, to_labels


def predict_semantic(
    cfg: DictConfig, plan: OutputPlan, data: dict[str, Any], to_labels: Labeller
) -> list[Path]:
    """Writes a palette PNG mask (pixel values are class ids) and an overlay for every input
    of ``plan``, at the image's own size, where the plan put them (``<name>.png``,
    ``<name>_overlay.png``). Images are read by ``cfg.num_workers`` workers and run
    ``cfg.batch_size`` at a time (images of equal size share a batch). Inputs that could not
    be read end the run with an ``InputError``, after the others are written."""
    paths = plan.inputs
    palette = [list(c) for c in data["palette"]]
    flat_palette = [v for c in palette for v in c]
    written, failed = [], []

    def write(i: int, image: np.ndarray, labels: np.ndarray) -> None:
        mask = Image.fromarray(labels.astype(np.uint8), mode="P")
        mask.putpalette(flat_palette)
        mask.save(plan.output(i, MASK))
        rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
        Image.fromarray(
            overlay(rgb, labels, palette, cfg.get("alpha", 0.5), data["ignore_index"])
        ).save(plan.output(i, OVERLAY))
        written.append(plan.output(i, MASK))

    def run_batch(items: list[tuple[int, np.ndarray, torch.Tensor]]) -> None:
        x = torch.stack([t for _, _, t in items])
        try:
            labels = to_labels(x)
        except Exception as err:  # out of memory: say on what and what to lower
            step = {"stage": "prediction", "shape": tuple(x.shape), "batch_size": batch_size}
            step["run"] = getattr(to_labels, "run", {})  # the checkpoint's config
            step["precision"] = getattr(to_labels, "precision", "32-true (ONNX)")
            raise_if_oom(err, step)
            raise
        for (i, image, _), lab in zip(items, labels, strict=True):
            write(i, image, lab)

    loader = image_loader(paths, data, int(cfg.get("num_workers", 0)))
    batch_size = max(1, int(cfg.get("batch_size", 1)))
    pending: dict[tuple, list] = {}  # images waiting for a full batch, by size
    with Progress(disable=not cfg.get("progress", True)) as progress:
        task = progress.add_task("predicting", total=len(paths))
        for i, image, x in loader:
            if image is None:
                failed.append((paths[i], x))
                progress.advance(task)
                continue
            group = pending.setdefault(tuple(x.shape), [])
            group.append((i, image, x))
            if len(group) == batch_size:
                run_batch(pending.pop(tuple(x.shape)))
                progress.advance(task, batch_size)
        for group in pending.values():
            run_batch(group)
            progress.advance(task, len(group))
    if written:
        log.info("wrote %d masks and overlays to %s", len(written), plan.out_root)
    raise_if_unreadable(failed, plan)
    return written

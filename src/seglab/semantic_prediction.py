"""Semantic prediction: a palette PNG mask and an overlay for every image, from a checkpoint
or from an ONNX file written by ``export.py``; on request also the calibrated class
probabilities (``save_probs``) and uncertainty maps (``uncertainty``: the softmax entropy,
with test-time augmentation the views' variance, and uncertain pixels hatched in the
overlay). docs/inference.md#probabilities-and-uncertainty-maps describes the files."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image
from rich.progress import Progress

from seglab.calibration import probabilities
from seglab.checkpoints import module_from_checkpoint
from seglab.config import plain
from seglab.export import onnx_predictor
from seglab.inference import Inferer, mean_of_views
from seglab.module import autocast, logits_to_labels
from seglab.out_of_memory import raise_if_oom
from seglab.prediction_io import (
    ENTROPY,
    MASK,
    OVERLAY,
    PROBS,
    TTA_VAR,
    OutputPlan,
    image_loader,
    on_device,
    raise_if_unreadable,
)
from seglab.temperature import resolve_temperature
from seglab.uncertainty import grey_levels, normalised_entropy, view_variance
from seglab.visualize import hatch_uncertain, overlay

log = logging.getLogger(__name__)


@dataclass
class Scorer:
    """How a batch of images becomes logits, from a checkpoint or an ONNX file: ``logits(x,
    views)`` returns the inference's logits (N, C, H, W) and, with ``views=True``, each
    test-time-augmentation view's logits too (else None); ``temperature`` divides them for
    every probability; ``run`` and ``precision`` name the set-up in an out-of-memory error."""

    data: dict[str, Any]
    logits: Callable[[torch.Tensor, bool], tuple[torch.Tensor, list[torch.Tensor] | None]]
    temperature: float = 1.0
    run: dict[str, Any] = field(default_factory=dict)
    precision: str = "32-true (ONNX)"


def _scores(inferer: Inferer, predict: Callable, x: torch.Tensor, views: bool) -> tuple:
    """The logits of ``inferer`` and, when asked, its views (the same mean, so the same
    masks as without them)."""
    if not views:
        return inferer(predict, x), None
    each = list(inferer.views(predict, x))
    return mean_of_views(each), each


def checkpoint_scorer(cfg: DictConfig, ckpt: dict[str, Any]) -> Scorer:
    """The ``Scorer`` of a checkpoint (with this command's inference, if it sets one, and
    its ``temperature``: ``auto`` is the one src/calibrate.py saved beside it, if any)."""
    run = OmegaConf.create(ckpt["seglab_config"])
    if cfg.get("inference"):
        with open_dict(run):
            run.inference = cfg.inference
    module, run = module_from_checkpoint(ckpt, run, path=cfg.ckpt_path)
    module.temperature = _temperature(cfg, cfg.ckpt_path)
    device, precision = on_device(module, cfg, run)

    def logits(x: torch.Tensor, views: bool) -> tuple:
        with torch.no_grad(), autocast(precision, device):
            return _scores(module.inferer, module.logits, x.to(device), views)

    data = OmegaConf.to_container(run.data, resolve=True)
    return Scorer(data, logits, module.temperature, plain(run), precision)


def onnx_scorer(cfg: DictConfig, data: dict[str, Any]) -> Scorer:
    """The same from an ONNX file written by ``export.py`` (``data``: its metadata, read
    first by ``read_onnx_metadata`` to check the file before anything else); onnxruntime
    runs in fp32 under the configured inference (slide, TTA). ``temperature=auto``: the
    file beside the ``.onnx`` (``model.calibration.json``) if there is one, else 1."""
    inference = cfg.get("inference")
    inferer = Inferer(**(OmegaConf.to_container(inference, resolve=True) if inference else {}))
    predict = onnx_predictor(cfg.onnx_path)
    temperature = _temperature(cfg, cfg.onnx_path)

    def logits(x: torch.Tensor, views: bool) -> tuple:
        return _scores(inferer, predict, x, views)

    return Scorer(data, logits, temperature)


def _temperature(cfg: DictConfig, model_file: Any) -> float:
    """``cfg.temperature`` resolved (``seglab.temperature``) when probabilities are written;
    the labels do not depend on it, so otherwise 1 and nothing is read or logged."""
    if not (cfg.get("save_probs", False) or cfg.get("uncertainty", False)):
        return 1.0
    return resolve_temperature(cfg.get("temperature", "auto"), model_file)


def semantic_outputs(cfg: DictConfig) -> list[str]:
    """The endings of the files written per image: the mask and the overlay, and with
    ``save_probs`` / ``uncertainty`` the probabilities, the entropy and (several
    test-time-augmentation views only) the views' variance."""
    endings = [MASK, OVERLAY]
    if cfg.get("save_probs", False):
        endings.append(PROBS)
    if cfg.get("uncertainty", False):
        endings.append(ENTROPY)
        if _num_views(cfg) > 1:
            endings.append(TTA_VAR)
    return endings


def _num_views(cfg: DictConfig) -> int:
    inference = cfg.get("inference") or {}
    return len(inference.get("scales", [1.0])) * (2 if inference.get("flip", False) else 1)


def _extras(cfg: DictConfig, scorer: Scorer, x: torch.Tensor) -> tuple[np.ndarray, dict]:
    """A batch's labels (N, H, W) and, per ending, what else is written of each image:
    float16 probabilities (N, C, H, W), the normalised entropy and the views' variance
    (N, H, W, float in [0, 1])."""
    want_probs, want_maps = cfg.get("save_probs", False), cfg.get("uncertainty", False)
    logits, views = scorer.logits(x, bool(want_maps) and _num_views(cfg) > 1)
    labels = logits_to_labels(logits).cpu().numpy()
    extras = {}
    if want_probs or want_maps:
        probs = probabilities(logits, scorer.temperature)
        if want_probs:
            extras[PROBS] = probs.half().cpu().numpy()
        if want_maps:
            extras[ENTROPY] = normalised_entropy(probs).cpu().numpy()
        if views is not None:
            each = [probabilities(v, scorer.temperature) for v in views]
            extras[TTA_VAR] = view_variance(each).cpu().numpy()
    return labels, extras


def predict_semantic(cfg: DictConfig, plan: OutputPlan, scorer: Scorer) -> list[Path]:
    """Writes a palette PNG mask (pixel values are class ids) and an overlay for every input
    of ``plan``, at the image's own size, where the plan put them (``<name>.png``,
    ``<name>_overlay.png``; ``semantic_outputs`` for the optional ones). Images are read by
    ``cfg.num_workers`` workers and run ``cfg.batch_size`` at a time (images of equal size
    share a batch). Inputs that could not be read end the run with an ``InputError``, after
    the others are written."""
    paths, data = plan.inputs, scorer.data
    palette = [list(c) for c in data["palette"]]
    flat_palette = [v for c in palette for v in c]
    bits = int(cfg.get("uncertainty_bits", 8))
    above = cfg.get("uncertain_above", 0.5) if cfg.get("uncertainty", False) else None
    written, failed = [], []

    def write(i: int, image: np.ndarray, labels: np.ndarray, extras: dict) -> None:
        mask = Image.fromarray(labels.astype(np.uint8), mode="P")
        mask.putpalette(flat_palette)
        mask.save(plan.output(i, MASK))
        rgb = image if image.shape[2] == 3 else np.repeat(image, 3, axis=2)
        shown = overlay(rgb, labels, palette, cfg.get("alpha", 0.5), data["ignore_index"])
        if above is not None:
            shown = hatch_uncertain(shown, extras[ENTROPY] > above)
        Image.fromarray(shown).save(plan.output(i, OVERLAY))
        if PROBS in extras:
            np.save(plan.output(i, PROBS), extras[PROBS])
        for ending in (ENTROPY, TTA_VAR):
            if ending in extras:
                Image.fromarray(grey_levels(extras[ending], bits)).save(plan.output(i, ending))
        written.append(plan.output(i, MASK))

    def run_batch(items: list[tuple[int, np.ndarray, torch.Tensor]]) -> None:
        x = torch.stack([t for _, _, t in items])
        try:
            labels, extras = _extras(cfg, scorer, x)
        except Exception as err:  # out of memory: say on what and what to lower
            step = {"stage": "prediction", "shape": tuple(x.shape), "batch_size": batch_size}
            step["run"], step["precision"] = scorer.run, scorer.precision
            raise_if_oom(err, step)
            raise
        for k, (i, image, _) in enumerate(items):
            write(i, image, labels[k], {key: value[k] for key, value in extras.items()})

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

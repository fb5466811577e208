"""Instance prediction from a ``task=instance`` checkpoint: an overlay per image (one colour per
instance, with its class and score), optionally one mask per detection and a COCO results
file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from rich.progress import Progress

from seglab import coco_eval
from seglab.checkpoints import module_from_checkpoint
from seglab.config import INSTANCE_MODULE, plain
from seglab.module import autocast
from seglab.out_of_memory import raise_if_oom
from seglab.prediction_io import (
    INSTANCE_MASKS,
    OVERLAY,
    OutputPlan,
    image_loader,
    on_device,
    raise_if_unreadable,
)
from seglab.visualize import draw_instances

log = logging.getLogger(__name__)


def is_instance_run(run: dict[str, Any]) -> bool:
    """Whether a saved run config (upgraded on load) trained an instance-segmentation module."""
    return run.get("model", {}).get("_target_") == INSTANCE_MODULE


def predict_instances(cfg: DictConfig, plan: OutputPlan, ckpt: dict[str, Any]) -> list[Path]:
    """Writes ``<name>_overlay.png`` (one colour per instance, class name and score) for
    every input of ``plan`` at the image's own size; with ``instance_masks=true`` also
    ``<name>_instances/<k>_<class>.png`` (0/255, one per detection, by score); with
    ``coco_json=<file>`` the detections as a COCO results JSON (image ids: the file name's
    number when it is one, as COCO's, else the image's position in the sorted list). Inputs
    that could not be read end the run with an ``InputError``, after the others are
    written."""
    module, run = module_from_checkpoint(ckpt, path=cfg.ckpt_path)
    device, precision = on_device(module, cfg, run)
    score_thresh = cfg.get("score_thresh")
    score_thresh = module.paste_score_thresh if score_thresh is None else float(score_thresh)
    paths = plan.inputs
    written, failed, results = [], [], []
    data = OmegaConf.to_container(run.data, resolve=True)
    loader = image_loader(paths, data, int(cfg.get("num_workers", 0)))
    with Progress(disable=not cfg.get("progress", True)) as progress:
        task = progress.add_task("predicting", total=len(paths))
        for pos, image, x in loader:
            progress.advance(task)
            path = paths[pos]
            if image is None:
                failed.append((path, x))
                continue
            try:
                with torch.no_grad(), autocast(precision, device):
                    out = module.detections([x.to(device)])[0]
            except Exception as err:  # out of memory: say on what and what to lower
                step = {"stage": "prediction", "shape": tuple(x[None].shape), "batch_size": 1}
                raise_if_oom(err, step | {"run": plain(run), "precision": precision})
                raise
            keep = out["scores"] >= score_thresh
            masks = out["masks"][keep].cpu().numpy()
            labels, scores = out["labels"][keep].tolist(), out["scores"][keep].tolist()
            boxes = out["boxes"][keep].float().cpu().numpy()
            drawn = draw_instances(
                image, masks, labels, scores, module.class_names, cfg.get("alpha", 0.5)
            )
            overlay_path = plan.output(pos, OVERLAY)
            Image.fromarray(drawn).save(overlay_path)
            written.append(overlay_path)
            if cfg.get("instance_masks", False):
                folder = plan.output(pos, INSTANCE_MASKS)
                folder.mkdir(exist_ok=True)
                for k, m in enumerate(masks):
                    name = module.class_names[labels[k]].replace(" ", "_")
                    Image.fromarray(m.astype(np.uint8) * 255).save(folder / f"{k:03d}_{name}.png")
            if cfg.get("coco_json"):
                image_id = int(path.stem) if path.stem.isdigit() else pos
                rel = plan.stems[pos].relative_to(plan.out_root)
                for d in coco_eval.image_record(
                    image_id, *image.shape[:2], np.zeros((0, 1, 1)), [], [], None,
                    masks, labels, scores, boxes,
                )["det"]:  # fmt: skip
                    results.append({"image_id": image_id, "file_name": str(rel), **d})
    if cfg.get("coco_json") and written:
        path = Path(cfg.coco_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results))
        log.info("wrote %d detections (COCO results format) to %s", len(results), path)
    if written:
        log.info("wrote %d instance overlays to %s", len(written), plan.out_root)
    raise_if_unreadable(failed, plan)
    return written

"""A run's best checkpoint on its validation images: the rows of the prediction grid, the
boundary F-score, and the net's size (parameters, forward GFLOPs)."""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import Any

import torch

from seglab.benchmark.flops import flops_per_image
from seglab.boundary import boundary_fscore
from seglab.checkpoints import load_checkpoint, module_from_checkpoint
from seglab.config import build
from seglab.module import logits_to_labels
from seglab.visualize import denormalize


def predict_run(
    ckpt_path: str | Path, grid_images: int, tolerance_px: float | None
) -> dict[str, Any]:
    """The best checkpoint on the run's validation images (the same fixed subset the run
    validated on): label maps of the first ``grid_images`` for the grid, the boundary F-score
    over all of them when ``tolerance_px`` is set, the net's parameters and forward GFLOPs."""
    ckpt = load_checkpoint(ckpt_path)
    module, run = module_from_checkpoint(ckpt, path=ckpt_path)
    module.eval()
    del ckpt
    data = run.data
    dataset = build(data).dataset("val")
    count = len(dataset) if tolerance_px is not None else min(grid_images, len(dataset))
    rows, scores = [], []
    with torch.inference_mode():
        for i in range(count):
            item = dataset[i]
            x = item["image"][None].float()
            labels = logits_to_labels(module.inferer(module.logits, x))[0]
            if tolerance_px is not None:
                bf = boundary_fscore(
                    labels, item["mask"], data.num_classes, tolerance_px, data.ignore_index, "none"
                )
                scores.append(float(bf[0]))
            if i < grid_images:
                image = denormalize(item["image"], data.mean, data.std)
                rows.append((image, item["mask"].numpy(), labels.numpy()))
    finite = [s for s in scores if math.isfinite(s)]
    net = module.net.float()
    out = {
        "grid": rows,
        "bf": sum(finite) / len(finite) if finite else None,
        "bf_images": len(finite),
        "params": sum(p.numel() for p in net.parameters()),
        "gflops": flops_per_image(net, data.in_channels, int(data.crop_size)) / 1e9,
    }
    del module, net
    gc.collect()
    return out

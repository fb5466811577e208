"""Speeds of the parts around the training step: eager and onnxruntime inference, one
metric update (seglab's confusion matrix against torchmetrics; the calibration and boundary
metrics every evaluation adds) and data loading alone."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torchmetrics.classification import MulticlassJaccardIndex

from seglab.benchmark.timing import sync
from seglab.boundary import BoundaryStats
from seglab.calibration import CalibrationStats
from seglab.export import export_onnx
from seglab.metrics import ConfusionMatrix
from seglab.module import autocast


def infer_times(
    module: torch.nn.Module, x: torch.Tensor, steps: int, warmup: int, precision: str
) -> list[float]:
    """Seconds per eager forward pass of ``x`` (after ``warmup`` untimed ones)."""
    device = x.device
    times = []
    with torch.inference_mode(), autocast(precision, device):
        for _ in range(warmup + steps):
            start = time.perf_counter()
            module(x)
            sync(device)
            times.append(time.perf_counter() - start)
    return times[warmup:]


def onnx_times(net: torch.nn.Module, x: torch.Tensor, steps: int, path: Path) -> list[float]:
    """Exports ``net`` to ``path`` and returns seconds per onnxruntime (CPU) run of ``x``."""
    import onnxruntime as ort  # here: only this measurement needs the runtime

    export_onnx(net, x[:1].cpu(), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.cpu().float().numpy()}
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return times[1:]


def metric_update_ms(
    num_classes: int, ignore_index: int, shape: tuple[int, ...], device: torch.device
) -> tuple[float, float]:
    """Median time of one confusion-matrix update (seglab's) and of torchmetrics'
    MulticlassJaccardIndex update, on the same predictions and labels (10 % ignored)."""
    gen = torch.Generator().manual_seed(0)
    preds = torch.randint(0, num_classes, shape, generator=gen).to(device)
    target = torch.randint(0, num_classes, shape, generator=gen)
    target[torch.rand(shape, generator=gen) < 0.1] = ignore_index
    target = target.to(device)
    ours = ConfusionMatrix(num_classes, ignore_index).to(device)
    theirs = MulticlassJaccardIndex(num_classes, ignore_index=ignore_index).to(device)
    ms = [median_ms(lambda m=metric: m.update(preds, target), device) for metric in (ours, theirs)]
    return ms[0], ms[1]


def median_ms(update: Any, device: torch.device, repeats: int = 12) -> float:
    """Median milliseconds of ``update()`` over ``repeats`` calls (the first two left out)."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        update()
        sync(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[2:])


def evaluation_metrics_ms(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> dict[str, float]:
    """What an evaluation adds per batch besides the confusion matrix, in ms: the calibration
    sums on the net's ``logits`` and the boundary metrics (BF and Boundary IoU, default
    settings) on a prediction with realistic edges, ``target`` shifted by 2 pixels."""
    c = logits.shape[1] if logits.shape[1] > 1 else 2
    pred = torch.roll(target, shifts=(2, 2), dims=(-2, -1)).clamp(0, c - 1)
    calibration, boundary = CalibrationStats(c, ignore_index), BoundaryStats(c, ignore_index)
    return {
        "calibration": median_ms(lambda: calibration.update(logits, target), logits.device),
        "boundary": median_ms(lambda: boundary.update(pred, target), logits.device),
    }


def loader_rate(datamodule: Any, batches: int) -> tuple[float, int]:
    """Images/s of the training loader alone over ``batches`` batches (after the first,
    which pays for the workers' start-up), and how many images were read."""
    loader = datamodule.train_dataloader()
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            count += next(it)["image"].shape[0]
        except StopIteration:
            break
    return count / (time.perf_counter() - start), count

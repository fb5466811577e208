"""The whole benchmark of one config: every measurement, ``benchmark.json`` and the console
table (``python src/benchmark.py``; what is measured: see the package docstring)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

from seglab.allocator import keep_freed_memory
from seglab.benchmark.flops import flops_per_image
from seglab.benchmark.speeds import (
    evaluation_metrics_ms,
    infer_times,
    loader_rate,
    metric_update_ms,
    onnx_times,
)
from seglab.benchmark.tables import print_result
from seglab.benchmark.timing import default_device, summary
from seglab.benchmark.training_loops import interleaved_training
from seglab.config import build, model_name, print_config_tree
from seglab.data.conventions import infer_num_classes
from seglab.instantiators import build_module
from seglab.module import autocast


def benchmark(cfg: DictConfig) -> dict[str, Any]:
    """Measures everything listed in the package docstring, writes ``benchmark.json`` into
    the run folder, prints the table and returns the figures."""
    bench = cfg.bench
    if cfg.get("malloc_keep_freed"):  # as training does; both loops run under it
        keep_freed_memory()
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print_config_tree(cfg, out_dir / "config_tree.log")
    if bench.get("batch_size"):
        with open_dict(cfg):
            cfg.data.batch_size = bench.batch_size
    infer_num_classes(cfg)  # folder data with num_classes=null
    datamodule = build(cfg.data)
    datamodule.setup("fit")
    loader_img_per_s, _ = loader_rate(datamodule, bench.loader_batches)
    batch = next(iter(datamodule.train_dataloader()))
    batch = {"image": batch["image"], "mask": batch["mask"]}
    n = batch["image"].shape[0]
    steps = bench.warmup + bench.steps
    precision = str(cfg.trainer.get("precision", "32-true"))

    train = interleaved_training(cfg, batch, bench.warmup, steps + 1, bench.repeats)
    seglab_train, plain_train = train["seglab"], train["plain"]

    module = build_module(cfg).eval()
    device = default_device()
    module.to(device)
    x = batch["image"].to(device)
    infer = summary(infer_times(module, x, bench.steps, bench.warmup, precision), n, bench.repeats)
    onnx = None
    if bench.onnx:
        net = module.net.cpu().float()
        onnx = summary(
            onnx_times(net, x.cpu(), bench.steps, out_dir / "model.onnx"), n, bench.repeats
        )
    gflops = flops_per_image(module.net.cpu().float(), cfg.data.in_channels, bench.flops_size) / 1e9
    image_size = list(batch["image"].shape[-2:])
    gflops_batch = flops_per_image(module.net, cfg.data.in_channels, image_size) / 1e9

    metric_ms, torchmetrics_ms = metric_update_ms(
        cfg.data.num_classes, cfg.data.ignore_index, tuple(batch["mask"].shape), device
    )
    with torch.no_grad(), autocast(precision, device):
        logits = module.logits(x).float()
    extra_ms = evaluation_metrics_ms(logits, batch["mask"].to(device), cfg.data.ignore_index)

    result = {
        "model": model_name(cfg),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "precision": precision,
        "channels_last": bool(cfg.model.get("channels_last", False)),
        "batch_size": n,
        "image_size": image_size,
        "params": sum(p.numel() for p in module.net.parameters()),
        "train.rounds": bench.repeats,
        "train.seglab_img_per_s": seglab_train["median"],
        "train.seglab_spread": seglab_train["spread"],
        "train.plain_img_per_s": plain_train["median"],
        "train.plain_spread": plain_train["spread"],
        "train.ratio": train["ratio"]["median"],
        "train.ratio_min": train["ratio"]["min"],
        "train.ratio_max": train["ratio"]["max"],
        "train.overhead_ms_per_step": train["overhead_ms"]["median"],
        "train.seglab_peak_mb": seglab_train["peak_mb"],
        "train.plain_peak_mb": plain_train["peak_mb"],
        "train.memory_ratio": seglab_train["peak_mb"] / plain_train["peak_mb"],
        "infer.img_per_s": infer["median"],
        "infer.spread": infer["spread"],
        "infer.onnx_img_per_s": onnx["median"] if onnx else None,
        "loader.img_per_s": loader_img_per_s,
        "loader.ratio_to_train": loader_img_per_s / seglab_train["median"],
        "gflops_per_img": gflops,
        "metric.update_ms": metric_ms,
        "metric.torchmetrics_update_ms": torchmetrics_ms,
        "metric.calibration_ms": extra_ms["calibration"],
        "metric.boundary_ms": extra_ms["boundary"],
        "gflops_size": bench.flops_size,
        # Training does forward + backward: about 3x the forward FLOPs per image.
        "train.gflop_per_s": 3 * gflops_batch * seglab_train["median"],
    }
    (out_dir / "benchmark.json").write_text(json.dumps(result, indent=2))
    print_result(result)
    return result

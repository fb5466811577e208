"""The benchmark command and ONNX export: correct outputs (timings are not asserted)."""

from __future__ import annotations

import json

import torch

from seglab.benchmark import flops_per_image, run
from seglab.export import check_onnx, export_onnx
from seglab.models.unet import UNet

KEYS = [
    "train.seglab_img_per_s",
    "train.plain_img_per_s",
    "train.ratio",
    "train.seglab_peak_mb",
    "train.plain_peak_mb",
    "infer.img_per_s",
    "infer.onnx_img_per_s",
    "loader.img_per_s",
    "gflops_per_img",
    "metric.update_ms",
    "metric.torchmetrics_update_ms",
]


def test_benchmark_writes_every_key(make_cfg, tmp_path):
    cfg = make_cfg(
        "benchmark",
        "bench.warmup=1",
        "bench.steps=2",
        "bench.repeats=1",
        "bench.loader_batches=2",
        "bench.flops_size=64",
    )
    result = run(cfg)
    saved = json.loads((tmp_path / "run" / "benchmark.json").read_text())
    for key in KEYS:
        assert isinstance(saved[key], float) and saved[key] > 0, key
    assert saved == result
    assert (tmp_path / "run" / "model.onnx").is_file()


def test_flop_count_matches_a_hand_count():
    """One 3x3 conv, 3 -> 8 channels, no bias, on 16x16: 2 * 8 * 3 * 9 * 256 FLOPs."""
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert flops_per_image(conv, 3, 16) == 2 * 8 * 3 * 9 * 16 * 16


def test_onnx_export_matches_pytorch_at_another_size(tmp_path):
    torch.manual_seed(0)
    net = UNet(5, depth=2, base_channels=8).eval()
    for m in net.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    path = export_onnx(net, torch.randn(1, 3, 64, 64), tmp_path / "unet.onnx")
    assert check_onnx(net, path, torch.randn(2, 3, 97, 131)) < 1e-4

"""The benchmark command and ONNX export: correct outputs (timings are not asserted)."""

from __future__ import annotations

import json

import pytest
import torch

from seglab.benchmark import training_loops
from seglab.benchmark.command import benchmark
from seglab.benchmark.flops import flops_per_image
from seglab.benchmark.tables import markdown_table
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
    "metric.calibration_ms",
    "metric.boundary_ms",
]


def test_benchmark_writes_every_key(make_cfg, tmp_path):
    cfg = make_cfg(
        "benchmark",
        "bench.warmup=1",
        "bench.steps=2",
        "bench.repeats=2",
        "bench.loader_batches=2",
        "bench.flops_size=64",
    )
    result = benchmark(cfg)
    saved = json.loads((tmp_path / "run" / "benchmark.json").read_text())
    for key in KEYS:
        assert isinstance(saved[key], float) and saved[key] > 0, key
    assert saved == result
    assert saved["train.rounds"] == 2
    assert saved["train.ratio_min"] <= saved["train.ratio"] <= saved["train.ratio_max"]
    header, _, row = markdown_table(tmp_path).splitlines()
    assert row.startswith("| run |") and row.count("|") == header.count("|")
    assert (tmp_path / "run" / "model.onnx").is_file()
    # seglab's loop ran with the run's loggers: the training loss reached TensorBoard.
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_training_loops_alternate_and_the_ratio_is_per_round(monkeypatch):
    """ABBA order, warm-up steps dropped, and the ratio taken round by round: a machine
    that slows down between rounds changes both loops' rates but not the ratio."""
    calls = []
    speed = {"slowdown": 1.0}

    def fake(name, step_s):
        def loop(cfg, batch, steps):
            calls.append(name)
            speed["slowdown"] *= 1.5  # the machine keeps getting slower
            # the warm-up step is 100x slower and must not count
            return [100 * step_s] + [step_s * speed["slowdown"]] * (steps - 1)

        return loop

    monkeypatch.setattr(training_loops, "train_seglab", fake("seglab", 0.1))
    monkeypatch.setattr(training_loops, "train_plain", fake("plain", 0.1))
    batch = {"image": torch.zeros(4, 3, 8, 8)}
    out = training_loops.interleaved_training(None, batch, warmup=1, steps=5, rounds=4)
    assert calls == ["seglab", "plain", "plain", "seglab"] * 2
    # In each round the loop that ran second was 1.5x slower: ratios 1.5, 1/1.5, 1.5, 1/1.5.
    assert out["ratio"]["min"] == pytest.approx(1 / 1.5)
    assert out["ratio"]["max"] == pytest.approx(1.5)
    assert out["ratio"]["median"] == pytest.approx(1.0)  # ABBA cancels the drift
    step_ms = [100 * 1.5**k for k in range(1, 9)]  # 0.1 s x slowdown, per call
    extra = sorted(
        [step_ms[0] - step_ms[1], step_ms[3] - step_ms[2]]
        + [step_ms[4] - step_ms[5], step_ms[7] - step_ms[6]]
    )
    assert out["overhead_ms"]["median"] == pytest.approx(sum(extra[1:3]) / 2)
    # Rates leave out the warm-up step: 4 timed steps of 4 images, 0.1 s x slowdown each.
    slowdowns = [1.5**k for k in range(1, 9)]
    seglab_rates = sorted(4 * 4 / (4 * 0.1 * slowdowns[i]) for i in (0, 3, 4, 7))
    assert out["seglab"]["median"] == pytest.approx(sum(seglab_rates[1:3]) / 2)


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

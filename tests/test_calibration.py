"""Calibration figures (ECE, NLL, Brier) against NumPy, the temperature fit, and the file
that carries a fitted temperature from calibrate.py to eval / predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from seglab.calibration import CalibrationStats, fit_temperature, probabilities
from seglab.errors import InputError
from seglab.temperature import resolve_temperature, save_calibration, temperature_file


def numpy_calibration(logits: np.ndarray, target: np.ndarray, bins: int = 15, ignore=255):
    """ECE (Guo et al. 2017), NLL and multi-class Brier of (N, C, H, W) logits, written
    independently: per-pixel loops over bins with explicit masks."""
    z = logits.astype(np.float64)
    if z.shape[1] == 1:
        z = np.concatenate([np.zeros_like(z), z], axis=1)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    c = p.shape[1]
    p = p.transpose(0, 2, 3, 1).reshape(-1, c)
    t = target.reshape(-1)
    keep = t != ignore
    p, t = p[keep], t[keep]
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    ece = 0.0
    for b in range(bins):
        inside = (conf > b / bins) & (conf <= (b + 1) / bins)
        if inside.any():
            ece += inside.mean() * abs((pred[inside] == t[inside]).mean() - conf[inside].mean())
    nll = -np.log(p[np.arange(len(t)), t]).mean()
    brier = ((p - np.eye(c)[t]) ** 2).sum(axis=1).mean()
    return ece, nll, brier


def test_figures_match_numpy_over_batches_with_ignored_pixels():
    rng = np.random.default_rng(0)
    for channels in (5, 1):  # a multi-class net, and a one-channel binary net
        logits = rng.normal(size=(4, channels, 13, 11)) * 3
        classes = max(channels, 2)
        target = rng.integers(0, classes, size=(4, 13, 11))
        target[1, :4] = 255
        metric = CalibrationStats(classes, ignore_index=255)
        for i in (0, 2):  # two batches: the sums must add up
            metric.update(torch.tensor(logits[i : i + 2]).float(), torch.tensor(target[i : i + 2]))
        got = metric.compute()
        ece, nll, brier = numpy_calibration(logits.astype(np.float32), target)
        assert got["ece"] == pytest.approx(ece, abs=1e-5)
        assert got["nll"] == pytest.approx(nll, rel=1e-5)
        assert got["brier"] == pytest.approx(brier, rel=1e-5)
        assert got["pixels"] == int((target != 255).sum()) == sum(got["bin_count"])


def test_calibrated_probabilities_give_a_low_ece_and_overconfident_ones_a_high_ece():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 200, 200) * 2
    # Labels drawn from the predicted distribution itself: perfectly calibrated.
    p = probabilities(logits)[0].permute(1, 2, 0).reshape(-1, 4)
    calibrated = torch.multinomial(p, 1)[:, 0].reshape(1, 200, 200)
    # Labels drawn from a flatter distribution: the logits are 3x over-confident.
    flat = probabilities(logits, temperature=3.0)[0].permute(1, 2, 0).reshape(-1, 4)
    overconfident = torch.multinomial(flat, 1)[:, 0].reshape(1, 200, 200)
    good, bad = CalibrationStats(4), CalibrationStats(4)
    good.update(logits, calibrated)
    bad.update(logits, overconfident)
    assert good.compute()["ece"] < 0.01
    assert bad.compute()["ece"] > 0.2
    assert bad.compute()["nll"] > good.compute()["nll"]
    # Scaling by the true temperature repairs it.
    fixed = CalibrationStats(4)
    fixed.update(logits, overconfident, temperature=3.0)
    assert fixed.compute()["ece"] < 0.01


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (200_000, 5))
    p = np.exp(z / 2.5) / np.exp(z / 2.5).sum(axis=1, keepdims=True)
    labels = (p.cumsum(axis=1) < rng.random((len(p), 1))).sum(axis=1)  # sampled labels
    assert fit_temperature(torch.from_numpy(z), torch.from_numpy(labels)) == pytest.approx(
        2.5, rel=0.03
    )
    # A one-channel binary net: label 1 with probability sigmoid(z / T).
    z1 = rng.normal(0, 4, (200_000, 1))
    y1 = (rng.random(len(z1)) < 1 / (1 + np.exp(-z1[:, 0] / 0.5))).astype(np.int64)
    assert fit_temperature(torch.from_numpy(z1), torch.from_numpy(y1)) == pytest.approx(
        0.5, rel=0.03
    )


def test_the_temperature_file_beside_a_checkpoint(tmp_path):
    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"")
    assert resolve_temperature("auto", ckpt) == 1.0  # nothing fitted: the raw softmax
    path = save_calibration(ckpt, 1.7, {"nll_before": 0.5, "nll_after": 0.4})
    assert path == temperature_file(ckpt) == tmp_path / "best.calibration.json"
    assert json.loads(path.read_text())["nll_after"] == 0.4
    assert resolve_temperature("auto", ckpt) == pytest.approx(1.7)
    assert resolve_temperature(None, ckpt) == 1.0
    assert resolve_temperature(2, ckpt) == 2.0
    for bad in ("hot", 0, -1):
        with pytest.raises(InputError, match="temperature=auto"):
            resolve_temperature(bad, ckpt)
    path.write_text("{not json")
    with pytest.raises(InputError, match="calibrate.py again"):
        resolve_temperature("auto", ckpt)

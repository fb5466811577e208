"""calibrate.py (temperature scaling, issue 20): the fitted temperature lowers the validation
NLL of a briefly trained model, the figures before and after are those of every labelled
pixel (checked against NumPy), the temperature lands beside the checkpoint where eval.py
finds it, one-channel binary nets work, and an unwritable checkpoint folder stops the run
before the validation pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fixtures import make_folder
from seglab import calibration_run, pipeline
from seglab.calibration_run import calibrate
from seglab.checkpoints import load_checkpoint, module_from_checkpoint
from seglab.config import build
from seglab.errors import InputError
from seglab.temperature import temperature_file


def _numpy_figures(ckpt_path, temperatures) -> dict[float, tuple[float, float, int]]:
    """Per temperature: the mean NLL and Brier score of every labelled validation pixel,
    from the model's fp32 logits of one image at a time, in NumPy (float64)."""
    ckpt = load_checkpoint(ckpt_path)
    module, run = module_from_checkpoint(ckpt)
    module.eval()
    ds = build(run.data).dataset("val")
    ignore = run.data.ignore_index
    sums = {t: [0.0, 0.0] for t in temperatures}
    pixels = 0
    for i in range(len(ds)):
        sample = ds[i]
        with torch.no_grad():
            z = module.logits(sample["image"][None]).double().numpy()[0]  # (C, H, W)
        if z.shape[0] == 1:
            z = np.concatenate([np.zeros_like(z), z])
        target = np.asarray(sample["mask"])
        valid = target != ignore
        pixels += int(valid.sum())
        onehot = np.eye(z.shape[0])[np.where(valid, target, 0)].transpose(2, 0, 1)
        for t in temperatures:
            zt = z / t
            m = zt.max(0)
            logp = zt - m - np.log(np.exp(zt - m).sum(0))
            picked = np.take_along_axis(logp, np.where(valid, target, 0)[None], 0)[0]
            sums[t][0] += float(-picked[valid].sum())
            brier = ((np.exp(logp) - onehot) ** 2).sum(0)
            sums[t][1] += float(brier[valid].sum())
    return {t: (s[0] / pixels, s[1] / pixels, pixels) for t, s in sums.items()}


def test_temperature_scaling_lowers_the_validation_nll(make_cfg, tmp_path):
    # 32 steps at a constant learning rate: a model that has learnt something (TINY's 8
    # steps inside the default warm-up learn nothing, and the best temperature is infinite).
    fit = ["scheduler=none", "optimizer.lr=0.01", "data.batch_size=4", "test=false"]
    samples = "data.dataset.num_samples={train: 64, val: 7, test: 5}"
    pipeline.train(make_cfg("train", *fit, samples, out="train"))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}", "precision=32-true", "max_pixels=5000", "seed=3"]
    report = calibrate(make_cfg("calibrate", *args, out="cal"))
    run_dir = tmp_path / "cal"
    saved = json.loads((run_dir / "calibration.json").read_text())
    assert saved["nll_after"] < saved["nll_before"]
    assert saved["temperature"] == report["temperature"] and 0.05 < report["temperature"] < 20
    assert saved["fit_pixels"] == 5000 < saved["pixels"]  # fitted on a sample ...
    t = report["temperature"]
    figures = _numpy_figures(ckpt, [1.0, t])
    assert saved["pixels"] == figures[1.0][2]  # ... the figures are every labelled pixel's
    for when, temp in (("before", 1.0), ("after", t)):
        nll, brier, _ = figures[temp]
        assert saved[f"nll_{when}"] == pytest.approx(nll, rel=1e-5, abs=1e-6)
        assert saved[f"brier_{when}"] == pytest.approx(brier, rel=1e-5, abs=1e-6)
        assert sum(saved[when]["bin_count"]) == saved["pixels"]
        assert (run_dir / f"reliability_{when}.png").stat().st_size > 1000
    beside = json.loads(temperature_file(ckpt).read_text())
    assert temperature_file(ckpt).parent == ckpt.parent
    assert beside["temperature"] == t and beside["nll_after"] == saved["nll_after"]

    # Logits not kept in memory: the split runs twice, with the same figures.
    again = calibrate(make_cfg("calibrate", *args, "cache_logits_gb=0", out="cal2"))
    for key in ("temperature", "nll_before", "nll_after", "ece_before", "ece_after"):
        assert again[key] == report[key], key
    # Fitted on every pixel (the default max_pixels exceeds them): the temperature is the
    # minimum of the split's NLL (NumPy), and differs from the sample's.
    full = calibrate(make_cfg("calibrate", *args[:2], "evaluation.calibration_bins=10", out="c3"))
    best = full["temperature"]
    assert full["fit_pixels"] == full["pixels"] and best != t
    assert len(full["after"]["bin_count"]) == 10
    nlls = {k: v[0] for k, v in _numpy_figures(ckpt, [best / 1.02, best, best * 1.02]).items()}
    assert nlls[best] < min(nlls[best / 1.02], nlls[best * 1.02])

    # eval.py then uses the temperature beside the checkpoint (temperature=auto): the last
    # fit's, which replaced the first's.
    assert json.loads(temperature_file(ckpt).read_text())["temperature"] == best
    cfg = make_cfg("eval", f"ckpt_path={ckpt}", "+trainer.precision=32-true", out="eval")
    assert cfg.temperature == "auto"
    metrics = pipeline.evaluate(cfg)
    assert metrics["val/nll"] == pytest.approx(full["nll_after"], rel=1e-6)


def test_binary_net_and_an_unwritable_checkpoint_folder(make_cfg, tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data", splits=(("train", 4), ("val", 3)))
    binary = ["data=folder", f"data.root={root}", "model.net.num_classes=1", "loss=bce"]
    small = ["data.crop_size=16", "data.batch_size=2", "model.net.base_channels=4"]
    pipeline.train(make_cfg("train", *binary, *small, "trainer.max_epochs=2", out="train"))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt)["state_dict"]["net.head.weight"].shape[0] == 1
    report = calibrate(make_cfg("calibrate", f"ckpt_path={ckpt}", "precision=32-true"))
    figures = _numpy_figures(ckpt, [1.0, report["temperature"]])
    assert report["pixels"] == report["fit_pixels"] == figures[1.0][2]  # all pixels fitted
    assert report["nll_before"] == pytest.approx(figures[1.0][0], rel=1e-5)
    assert report["nll_after"] == pytest.approx(figures[report["temperature"]][0], rel=1e-5)
    assert report["nll_after"] <= report["nll_before"]

    # The folder cannot be written (simulated: the tests may run as root): stopped before
    # the checkpoint is even loaded.
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(calibration_run.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(calibration_run, "load_checkpoint", lambda p: pytest.fail("loaded"))
    with pytest.raises(InputError, match="not writable .*Permission denied.*ckpt_path=<the copy>"):
        calibrate(make_cfg("calibrate", f"ckpt_path={ckpt}", out="refused"))

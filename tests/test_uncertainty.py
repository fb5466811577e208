"""Probabilities and uncertainty maps (issue 20): the temperature fit on synthetic logits,
the entropy / view-variance maps and the hatching against NumPy, and predict.py's
save_probs / uncertainty outputs (checkpoint and ONNX) against the model's own logits."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY, compose_cfg
from seglab import pipeline, prediction
from seglab.checkpoints import load_checkpoint, module_from_checkpoint
from seglab.errors import InputError
from seglab.export import export
from seglab.inference import Inferer
from seglab.prediction import predict
from seglab.temperature import save_calibration
from seglab.uncertainty import (
    grey_levels,
    max_view_variance,
    normalised_entropy,
    view_variance,
)
from seglab.visualize import hatch_uncertain


def _softmax(z: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _entropy(p: np.ndarray) -> np.ndarray:
    """Normalised entropy over axis 0, in float64."""
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=0) / np.log(p.shape[0])


def test_maps_and_hatching_match_numpy():
    rng = np.random.default_rng(1)
    p = _softmax(rng.normal(0, 2, (2, 4, 6, 7)), axis=1)
    p[0, :, 0, 0] = [1, 0, 0, 0]  # certain: 0 log 0 = 0
    p[0, :, 0, 1] = 0.25  # uniform: 1
    got = normalised_entropy(torch.from_numpy(p)).numpy()
    want = np.stack([_entropy(q) for q in p])
    assert np.allclose(got, want, atol=1e-6) and got[0, 0, 0] == 0
    assert got[0, 0, 1] == pytest.approx(1, abs=1e-6)

    # The largest disagreement of V views over C classes, by brute force over one-hot views.
    for views, classes in itertools.product(range(2, 5), range(2, 5)):
        top = max(
            np.eye(classes)[list(pick)].var(axis=0).sum()
            for pick in itertools.product(range(classes), repeat=views)
        )
        assert max_view_variance(views, classes) == pytest.approx(top), (views, classes)
    each = [_softmax(rng.normal(0, 2, (2, 4, 6, 7)), axis=1) for _ in range(3)]
    want = np.stack(each).var(axis=0).sum(axis=1) / max_view_variance(3, 4)
    got = view_variance([torch.from_numpy(q) for q in each]).numpy()
    assert np.allclose(got, want, atol=1e-6) and got.max() <= 1
    onehot = [torch.eye(4)[k][None, :, None, None] for k in (0, 1, 2)]  # total disagreement
    assert view_variance(onehot).item() == pytest.approx(1.0)
    assert grey_levels(np.array([0, 0.5, 1.0])).tolist() == [0, 128, 255]
    assert grey_levels(np.array([0.5]), 16).dtype == np.uint16

    # Hatching changes every uncertain pixel, extremes included, and nothing else.
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rgb[:4] = 255
    rgb[4:6] = 254
    rgb[6:8] = 0
    rgb[8:9] = 1
    uncertain = rng.random((16, 16)) < 0.5
    changed = (hatch_uncertain(rgb, uncertain) != rgb).any(axis=2)
    assert np.array_equal(changed, uncertain)

    # Inferer.views: what __call__ averages, bit for bit.
    net = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 20, 26)
    inferer = Inferer(scales=[0.75, 1.0], flip=True, memory_limit_gb=None)
    views = list(inferer.views(net, x))
    assert len(views) == inferer.num_views == 4 and views[0].shape == (2, 4, 20, 26)
    with torch.no_grad():
        assert torch.equal(sum(views[1:], views[0]) / 4, inferer(net, x))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    pipeline.train(compose_cfg("train", [*TINY, "trainer.max_epochs=1", "test=false"], out))
    return out / "checkpoints" / "last.ckpt"


def _reference(ckpt: Path, images: dict[str, np.ndarray], t: float) -> dict[str, tuple]:
    """Per image: the model's fp32 logits (C, H, W), the probabilities softmax(z / t) and of
    the mirrored view, from NumPy (float64)."""
    module, run = module_from_checkpoint(load_checkpoint(ckpt))
    module.eval()
    mean, std = np.asarray(run.data.mean), np.asarray(run.data.std)
    out = {}
    for name, image in images.items():
        x = torch.from_numpy(((image / 255.0 - mean) / std).astype(np.float32))
        x = x.permute(2, 0, 1)[None]
        with torch.no_grad():
            z = module.logits(x)[0].double().numpy()
            zf = module.logits(x.flip(-1)).flip(-1)[0].double().numpy()
        out[name] = (z, _softmax(z / t), _softmax(zf / t), _softmax((z + zf) / 2 / t))
    return out


def test_predict_writes_probabilities_and_uncertainty_maps(ckpt, make_cfg, tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "images"
    src.mkdir()
    images = {}
    for name, (h, w) in {"a": (40, 52), "b": (40, 52), "c": (33, 47)}.items():
        images[name] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(images[name]).save(src / f"{name}.png")
    t = 1.7
    save_calibration(ckpt, t, {})  # temperature=auto reads it
    ref = _reference(ckpt, images, t)
    entropy = {k: _entropy(v[1]) for k, v in ref.items()}
    above = float(np.median(np.concatenate([e.ravel() for e in entropy.values()])))

    def run(out: str, *overrides: str, model: str = f"ckpt_path={ckpt}") -> Path:
        extra = ["precision=32-true"] if model.startswith("ckpt") else []
        cfg = make_cfg(
            "predict", model, f"input={src}", f"output={tmp_path / out}", "num_workers=0",
            "progress=false", *extra, *overrides, out=f"run_{out}",
        )  # fmt: skip
        predict(cfg)
        return tmp_path / out

    plain = run("plain")  # the default outputs are unchanged: mask and overlay only
    assert sorted(p.name for p in plain.iterdir()) == sorted(
        f"{n}{e}" for n in images for e in (".png", "_overlay.png")
    )
    maps = run("maps", "save_probs=true", "uncertainty=true", f"uncertain_above={above}")
    assert not list(maps.glob("*_tta_var.png"))  # one view: no views' variance
    for name, (z, p, _, _) in ref.items():
        probs = np.load(maps / f"{name}_probs.npy")
        mask = np.asarray(Image.open(maps / f"{name}.png"))
        assert probs.dtype == np.float16 and probs.shape == z.shape
        assert np.allclose(probs.astype(np.float64).sum(axis=0), 1, atol=3e-3)
        assert np.abs(probs - p).max() < 1e-3  # softmax(logits / T), T from the file
        assert np.array_equal(mask, np.asarray(Image.open(plain / f"{name}.png")))
        top2 = np.sort(p, axis=0)[-2:]
        clear = top2[1] - top2[0] > 2e-3  # float16 may tie closer classes
        assert np.array_equal(probs.argmax(axis=0)[clear], mask[clear]) and clear.mean() > 0.9
        levels = np.asarray(Image.open(maps / f"{name}_entropy.png")).astype(int)
        assert np.abs(levels - np.rint(entropy[name] * 255)).max() <= 1
        # The overlay differs from the plain one exactly on the uncertain pixels.
        shown = np.asarray(Image.open(maps / f"{name}_overlay.png"))
        differs = (shown != np.asarray(Image.open(plain / f"{name}_overlay.png"))).any(axis=2)
        sure = np.abs(entropy[name] - above) > 1e-4
        assert np.array_equal(differs[sure], (entropy[name] > above)[sure])
        assert 0 < differs.mean() < 1

    # Test-time augmentation (flip): the views' variance, 16-bit, against NumPy.
    tta = run("tta", "uncertainty=true", "inference.flip=true", "uncertainty_bits=16")
    for name, (_, p, pf, pm) in ref.items():
        var = np.stack([p, pf]).var(axis=0).sum(axis=0) / max_view_variance(2, len(p))
        levels = np.asarray(Image.open(tta / f"{name}_tta_var.png")).astype(int)
        assert levels.max() > 0 and np.abs(levels - np.rint(var * 65535)).max() <= 2
        levels = np.asarray(Image.open(tta / f"{name}_entropy.png")).astype(int)
        assert np.abs(levels - np.rint(_entropy(pm) * 65535)).max() <= 2

    # The ONNX file: the same options, its temperature from the file beside the .onnx.
    onnx_path = tmp_path / "model.onnx"
    export(make_cfg("export", f"ckpt_path={ckpt}", f"output={onnx_path}", out="export"))
    save_calibration(onnx_path, t, {})
    onnx = run("onnx", "save_probs=true", "uncertainty=true", model=f"onnx_path={onnx_path}")
    for name, (_, p, _, _) in ref.items():
        assert np.abs(np.load(onnx / f"{name}_probs.npy") - p).max() < 1e-3
        assert (onnx / f"{name}_entropy.png").is_file()


def test_new_outputs_are_planned_before_the_model_loads(make_cfg, tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "a_entropy.png", "b.png", "b_tta_var.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / name)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"never loaded")
    monkeypatch.setattr(prediction, "load_checkpoint", lambda p: pytest.fail("loaded"))
    base = [f"ckpt_path={ckpt}", f"input={src}", f"output={tmp_path / 'out'}"]
    with pytest.raises(InputError, match=r"a\.png and .*a_entropy\.png would both write"):
        predict(make_cfg("predict", *base, "uncertainty=true"))
    # The views' variance only with several views: b_tta_var.png is then b's output.
    plan = prediction.plan_run(make_cfg("predict", *base, "save_probs=true"), False)
    assert len(plan.inputs) == 4
    with pytest.raises(InputError, match=r"b\.png and .*b_tta_var\.png would both write"):
        src.joinpath("a_entropy.png").unlink()
        predict(make_cfg("predict", *base, "uncertainty=true", "inference.flip=true"))

"""export.py: ONNX / TorchScript / torch.export files checked against PyTorch, and predict.py
running the ONNX file alone with the same masks as the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TINY, compose_cfg
from seglab import pipeline
from seglab.export import LogitsOnly, check_onnx, export, export_onnx, read_onnx_metadata
from seglab.models.autoencoder import ConvAutoencoder
from seglab.models.pspnet import PyramidPooling, integral_avg_pool
from seglab.models.unet import UNet
from seglab.prediction import predict


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """One tiny trained checkpoint shared by the tests below."""
    out = tmp_path_factory.mktemp("train")
    cfg = compose_cfg("train", [*TINY, "trainer.max_epochs=1", "test=false"], out)
    pipeline.train(cfg)
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Images of different sizes, two of them equal (so they share a batch), one grey."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, shape in [("a", (37, 53, 3)), ("b", (64, 48, 3)), ("c", (64, 48, 3))]:
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(root / f"{name}.png")
    Image.fromarray(rng.integers(0, 255, (70, 41), dtype=np.uint8)).save(root / "d.jpg")
    return root


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("?.png"))}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "export"])
def test_export_matches_pytorch_at_another_size(ckpt, make_cfg, tmp_path, fmt):
    check = []
    if fmt == "export":
        # torch.export keeps U-Net's shape guards (the decoder's crop is a no-op on the
        # 64x64 sample): the .pt2 takes sizes divisible by 4 (depth 2), not 97x131.
        with pytest.raises(ValueError, match="only accepts some sizes"):
            export(make_cfg("export", f"ckpt_path={ckpt}", "format=export", out="odd"))
        check = ["check_size=[3,96,132]"]
    result = export(make_cfg("export", f"ckpt_path={ckpt}", f"format={fmt}", *check))
    path = Path(result["path"])
    assert path.is_file() and path.parent == tmp_path / "run"
    assert result["format"] == fmt and result["max_abs_diff"] < 1e-4
    assert json.loads((tmp_path / "run" / "export.json").read_text()) == result
    if fmt == "onnx":
        meta = read_onnx_metadata(path)
        assert meta["class_names"][0] == "background" and len(meta["palette"]) == 5
        assert meta["mean"] == [0.5, 0.5, 0.5] and meta["in_channels"] == 3


def test_predict_with_onnx_gives_the_checkpoints_masks(ckpt, images, make_cfg, tmp_path):
    onnx_path = tmp_path / "model.onnx"
    export(make_cfg("export", f"ckpt_path={ckpt}", f"output={onnx_path}", out="export"))
    slide = ["inference.mode=slide", "inference.window=32"]  # the ORT session per window
    masks = {}
    # The checkpoint in fp32 (its default is the training precision, bf16 on CPU) and the
    # ONNX file alone, whole images and sliding windows.
    for name, model, extra in [
        ("ckpt", f"ckpt_path={ckpt}", ["precision=32-true"]),
        ("onnx", f"onnx_path={onnx_path}", []),
        ("ckpt_slide", f"ckpt_path={ckpt}", ["precision=32-true", *slide]),
        ("onnx_slide", f"onnx_path={onnx_path}", slide),
    ]:
        out = tmp_path / name
        cfg = make_cfg(
            "predict",
            model,
            f"input={images}",
            f"output={out}",
            "num_workers=0",
            *extra,
            out=f"p_{name}",
        )
        assert len(predict(cfg)) == 4
        masks[name] = _masks(out)
    assert masks["onnx"]["a.png"].shape == (37, 53)
    assert masks["onnx"]["d.png"].shape == (70, 41)
    for a, b in [("ckpt", "onnx"), ("ckpt_slide", "onnx_slide")]:
        assert masks[a].keys() == masks[b].keys() == {"a.png", "b.png", "c.png", "d.png"}
        for key in masks[a]:
            assert np.array_equal(masks[a][key], masks[b][key]), (a, b, key)


def test_clear_errors(ckpt, make_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export(make_cfg("export", f"ckpt_path={tmp_path / 'missing.ckpt'}"))
    with pytest.raises(ValueError, match="format must be one of"):
        export(make_cfg("export", f"ckpt_path={ckpt}", "format=tflite"))
    with pytest.raises(ValueError, match="pass ckpt_path=<file.ckpt> or onnx_path"):
        predict(make_cfg("predict", f"input={tmp_path}"))
    # An ONNX file without seglab's metadata (e.g. the benchmark's) cannot be predicted with.
    plain = export_onnx(
        UNet(5, depth=1, base_channels=2), torch.randn(1, 3, 16, 16), tmp_path / "x.onnx"
    )
    with pytest.raises(ValueError, match="no seglab metadata"):
        predict(make_cfg("predict", f"onnx_path={plain}", f"input={tmp_path}"))
    with pytest.raises(FileNotFoundError, match="onnx_path"):
        predict(make_cfg("predict", f"onnx_path={tmp_path / 'no.onnx'}", "input=x"))


def test_pspnet_pooling_exports_to_onnx_with_dynamic_sizes(tmp_path):
    """PSPNet's pyramid pooling: the integral-image pooling used while exporting equals
    PyTorch's adaptive pooling for sizes the bins do not divide, and the ONNX file runs at
    sizes other than the traced one."""
    import onnxruntime as ort
    import torch.nn.functional as F

    torch.manual_seed(0)
    for h, w in [(7, 11), (13, 5), (1, 9), (25, 31)]:
        x = torch.randn(2, 3, h, w)
        for bins in (1, 2, 3, 6):
            expected = F.adaptive_avg_pool2d(x, bins)
            torch.testing.assert_close(integral_avg_pool(x, bins), expected, atol=1e-5, rtol=0)
    ppm = PyramidPooling(8).eval()
    path = tmp_path / "ppm.onnx"
    torch.onnx.export(
        ppm,
        (torch.randn(1, 8, 12, 12),),
        str(path),
        input_names=["x"],
        dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(7, 13), (20, 9)]:
        x = torch.randn(2, 8, h, w)
        (y,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(y, ppm(x).numpy(), atol=1e-5)


def test_autoencoder_exports_with_dynamic_sizes(tmp_path):
    """The autoencoder pads to a multiple of 16 from the runtime shape while exporting, so
    its ONNX and TorchScript files give PyTorch's logits at sizes other than the traced one."""
    torch.manual_seed(0)
    net = ConvAutoencoder(3).eval()
    path = export_onnx(net, torch.randn(1, 3, 64, 64), tmp_path / "ae.onnx")
    with torch.no_grad():
        traced = torch.jit.trace(LogitsOnly(net), (torch.randn(1, 3, 64, 64),), check_trace=False)
        for size in [(97, 131), (33, 20)]:
            x = torch.randn(2, 3, *size)
            assert check_onnx(net, path, x) < 1e-5
            torch.testing.assert_close(traced(x), net(x))

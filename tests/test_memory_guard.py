"""The memory guard of whole-image inference: the estimate, the switch to sliding windows
(exactly what ``inference.mode=slide`` gives) and the errors, through the real training,
evaluation and prediction paths.

``python tests/test_memory_guard.py`` prints the estimate-vs-measured table of
docs/inference.md (each case in a fresh process: its peak resident memory, VmHWM, is reset
before the pass and read after it)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torch import nn

from helpers import tiny_cfg
from seglab import pipeline
from seglab.errors import InputError
from seglab.inference import Inferer
from seglab.memory_guard import UNSEEN_MARGIN, MemoryGuard, available_bytes, measure, peak_bytes
from seglab.models.torchvision_seg import TorchvisionSegmentation
from seglab.models.unet import UNet
from seglab.prediction import predict

GUARD_LOG = "seglab.memory_guard"


def two_convs() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1))


class Recording(nn.Module):
    """A net that notes the size of every input it gets (probes included)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.sizes = net, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return self.net(x)


@pytest.fixture(scope="module")
def unet() -> UNet:
    torch.manual_seed(0)
    return UNet(5, depth=2, base_channels=8).eval()


# --- the estimate ---------------------------------------------------------------------


def test_the_estimate_of_two_convolutions_is_what_their_activations_hold():
    """By hand: the peak is at the ReLU, when the first conv's 16 channels and the ReLU's
    16 are both alive (then 16 + 8): 32 float32 values = 128 bytes per pixel."""
    net = two_convs().eval()
    fp = measure(net, torch.randn(1, 3, 256, 256))
    assert 128 <= fp.per_pixel <= 1.25 * 128
    assert fp.fixed < 0.01 * fp.bytes(1, 256, 256) and fp.channels == 8
    # The peak grows with the pixels (4x the pixels, 4x the bytes) ...
    small, _ = peak_bytes(net, torch.randn(1, 3, 64, 64))
    big, _ = peak_bytes(net, torch.randn(1, 3, 128, 128))
    assert big == pytest.approx(4 * small, rel=0.02)
    # ... so that the line from 128-pixel probes predicts a 512-pixel pass with a batch of 2.
    real, _ = peak_bytes(net, torch.randn(2, 3, 512, 512))
    assert fp.bytes(2, 512, 512) == pytest.approx(real, rel=0.05)


class Viewing(nn.Module):
    """Takes views of its input and of a buffer: they allocate nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 1)
        self.register_buffer("scale", torch.ones(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x[:, :, 1:, 1:]) * self.scale.view(1, -1, 1, 1)


def test_views_of_the_image_and_the_weights_are_not_counted():
    """The probe crops are views of the whole image: a net viewing its input must not be
    charged the image's storage (12 MiB here), only its two 8-channel results."""
    fp = measure(Viewing().eval(), torch.randn(1, 3, 1024, 1024))
    assert fp.fixed < 1000 and fp.per_pixel == pytest.approx(64, rel=0.1)


def test_autocast_weight_copies_are_the_fixed_part():
    """Under bf16 autocast the activations take half the bytes (the peak: the first conv's 64
    channels and the ReLU's 64, 512 bytes per pixel in fp32), and the bf16 copies of the
    weights (made once per autocast context, kept until it ends) are fixed, not per pixel."""
    net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 8, 3, padding=1))
    net.eval()
    x = torch.randn(1, 3, 256, 256)
    fp32 = measure(net, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = measure(net, x)
    assert fp32.per_pixel == pytest.approx(512, rel=0.1) and fp32.fixed < 1000
    assert bf16.per_pixel == pytest.approx(256, rel=0.1)
    first_conv_weights = 2 * (64 * 3 * 9 + 64)  # cached when the peak happens
    all_weights = 2 * sum(p.numel() for p in net.parameters())
    assert first_conv_weights <= bf16.fixed <= all_weights


def test_auto_is_half_the_available_memory():
    cpu = torch.device("cpu")
    assert MemoryGuard("auto").limit(cpu) == pytest.approx(available_bytes(cpu) / 2, rel=0.1)
    assert MemoryGuard(2).limit(cpu) == 2 * 2**30 and MemoryGuard(None).limit(cpu) is None


# --- the guard ------------------------------------------------------------------------


def _limit_between(net: nn.Module, x: torch.Tensor, window: int) -> float:
    """A limit (GiB) under the whole pass over ``x`` and over its windows' needs."""
    fp = measure(net, x)
    n, _, h, w = x.shape
    whole = UNSEEN_MARGIN * fp.bytes(n, h, w)
    windows = UNSEEN_MARGIN * fp.bytes(n, window, window) + 4 * (3 * n * fp.channels + 1) * h * w
    assert windows < whole / 2  # the test's premise
    return whole / 2 / 2**30


@torch.no_grad()
def test_over_the_limit_the_image_runs_in_the_configured_windows(unet, caplog):
    x = torch.randn(1, 3, 192, 256)
    slide = dict(window=64, overlap=0.25, blend="gaussian")
    limit = _limit_between(unet, x, 64)
    guarded = Inferer(memory_limit_gb=limit, **slide)
    with caplog.at_level(logging.WARNING, logger=GUARD_LOG):
        got = guarded(unet, x)
        again = guarded(unet, x)
    explicit = Inferer(mode="slide", **slide)(unet, x)
    assert torch.equal(got, explicit) and torch.equal(again, explicit)
    assert not torch.allclose(got, unet(x), atol=1e-4)  # windows do differ from one pass
    warnings = [r.getMessage() for r in caplog.records if r.name == GUARD_LOG]
    assert len(warnings) == 1  # once per run
    for word in ("192x256", "GiB", "inference.memory_limit_gb", "inference.window=64"):
        assert word in warnings[0]
    # TTA views are guarded one by one: the half-scale view fits, the full one does not.
    tta = Inferer(memory_limit_gb=limit, scales=[0.5, 1.0], **slide)(unet, x)
    half = Inferer(scales=[0.5], memory_limit_gb=None)(unet, x)
    assert torch.allclose(tta, (half + explicit) / 2, atol=1e-6)


@torch.no_grad()
def test_under_the_limit_it_is_one_whole_pass(unet, caplog):
    net = Recording(unet)
    x = torch.randn(1, 3, 192, 256)
    with caplog.at_level(logging.WARNING, logger=GUARD_LOG):
        got = Inferer(memory_limit_gb=100)(net, x)
    assert torch.equal(got, unet(x))
    assert net.sizes == [(64, 64), (64, 64), (128, 128), (192, 256)]  # probes, then one pass
    assert not [r for r in caplog.records if r.name == GUARD_LOG]
    net.sizes.clear()
    Inferer(memory_limit_gb=100)(net, x[..., :100, :90])  # smaller than the probe
    assert net.sizes[-1] == (100, 90) and len(net.sizes) == 4
    net.sizes.clear()
    Inferer(memory_limit_gb=None)(net, x)  # no guard: no probe
    assert net.sizes == [(192, 256)]


@torch.no_grad()
def test_functions_that_are_no_torch_nets_run_unguarded(unet):
    """An onnxruntime session behind a function cannot be probed: it runs whole."""
    calls = []

    def onnx_like(t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(t.shape[-2:]))
        return unet(t)

    Inferer(memory_limit_gb=1e-9)(onnx_like, torch.randn(1, 3, 96, 80))
    assert calls == [(96, 80)]


@torch.no_grad()
def test_on_large_image_error_and_windows_too_large_name_the_keys(unet):
    x = torch.randn(1, 3, 192, 256)
    limit = _limit_between(unet, x, 64)
    with pytest.raises(InputError, match=r"inference.mode=slide.*inference.memory_limit_gb"):
        Inferer(memory_limit_gb=limit, on_large_image="error")(unet, x)
    with pytest.raises(InputError, match=r"lower inference.window \(now 192\)"):
        Inferer(memory_limit_gb=limit, window=192)(unet, x)
    with pytest.raises(InputError, match="lower inference.window"):
        Inferer(memory_limit_gb=1e-9, window=8)(unet, x)  # the blended logits alone


def test_bad_guard_settings_are_named():
    with pytest.raises(InputError, match="inference.memory_limit_gb must be auto"):
        Inferer(memory_limit_gb="lots")
    with pytest.raises(InputError, match="inference.memory_limit_gb"):
        Inferer(memory_limit_gb=0)
    with pytest.raises(InputError, match="inference.on_large_image must be 'slide' or 'error'"):
        Inferer(on_large_image="crash")
    with pytest.raises(InputError, match="inference.overlap"):  # whole mode may slide too
        Inferer(overlap=1.5)


# --- through training, eval.py and predict.py -----------------------------------------

SHAPES_WINDOW = 32  # shapes' evaluation images are 48-64 pixels a side
# The tiny U-Net with 4 channels holds about as much as the blended logits of its windows:
# with 16, the whole pass needs clearly more than the windows.
WIDER = "model.net.base_channels=16"


def _shapes_limit(tmp_path: Path) -> float:
    """A limit under every evaluation image's whole pass and over every image's windows,
    from the tiny config's own net."""
    cfg = tiny_cfg("train", [WIDER], tmp_path / "probe")
    net = instantiate(cfg.model.net).eval()
    fp = measure(net, torch.randn(1, 3, 64, 64))
    smallest_whole = UNSEEN_MARGIN * fp.bytes(1, 48, 48)
    w = SHAPES_WINDOW
    largest_windows = UNSEEN_MARGIN * fp.bytes(1, w, w) + 4 * (3 * fp.channels + 1) * 64 * 64
    assert largest_windows < smallest_whole * 0.8
    return (largest_windows + smallest_whole) / 2 / 2**30


class GuardedBeforeTraining(L.Callback):
    """Notes whether the sanity validation, which runs before training, hit the guard."""

    warned: list[bool] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        GuardedBeforeTraining.warned.append(pl_module.inferer.guard.warned)


def test_training_eval_and_predict_are_guarded(tmp_path, caplog):
    limit = _shapes_limit(tmp_path)
    window = f"inference.window={SHAPES_WINDOW}"
    guard = [f"inference.memory_limit_gb={limit}", window]
    one_step = [  # one epoch of one step, in fp32 (the precision _shapes_limit measured)
        "seed=1",
        WIDER,
        "data.dataset.num_samples={train: 8, val: 4, test: 1}",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=1",
        "trainer.precision=32-true",
        "test=false",
    ]
    noted = f"+callbacks.guarded._target_={__name__}.GuardedBeforeTraining"
    GuardedBeforeTraining.warned.clear()
    trained = pipeline.train(tiny_cfg("train", [*one_step, *guard, noted], tmp_path / "train"))
    assert GuardedBeforeTraining.warned == [True]  # the sanity validation ran in windows
    ckpt = f"ckpt_path={trained['best_checkpoint']}"
    slide = ["inference.mode=slide", window]
    slid = pipeline.evaluate(tiny_cfg("eval", [ckpt, *slide], tmp_path / "slide"))
    # The training run's last validation (of the same checkpoint) ran in the same windows.
    assert trained["val/confusion_matrix"] == slid["val/confusion_matrix"]

    ckpt = f"ckpt_path={trained['best_checkpoint']}"
    with pytest.raises(InputError, match="inference.mode=slide"):
        pipeline.evaluate(
            tiny_cfg("eval", [ckpt, *guard, "inference.on_large_image=error"], tmp_path / "e0")
        )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=GUARD_LOG):
        guarded = pipeline.evaluate(tiny_cfg("eval", [ckpt, *guard], tmp_path / "e1"))
    assert any("sliding windows" in r.getMessage() for r in caplog.records)
    assert guarded["val/confusion_matrix"] == slid["val/confusion_matrix"]
    assert guarded["val/miou"] == slid["val/miou"] and guarded["val/loss"] == slid["val/loss"]

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(60, 52), (48, 64)]):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"{k}.png")
    masks = {}
    for name, extra in [("guarded", guard), ("slide", slide)]:
        out = tmp_path / name
        pred = [ckpt, f"input={images}", f"output={out}", "progress=false", "num_workers=0"]
        pred += extra
        predict(tiny_cfg("predict", pred, tmp_path / f"p_{name}"))
        masks[name] = [np.asarray(Image.open(out / f"{k}.png")) for k in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*masks.values(), strict=True))


# --- the estimate-vs-measured table of docs/inference.md ------------------------------


def _vm(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _one_case(model: str, side: int, precision: str) -> str:
    """Estimate and peak-RSS growth of one whole pass, in this (fresh) process."""
    torch.manual_seed(0)
    if model == "unet":
        net = UNet(19).eval()
    else:
        net = TorchvisionSegmentation("deeplabv3_resnet50", 19).eval()
    bf16 = precision == "bf16"

    def logits(t: torch.Tensor) -> torch.Tensor:
        out = net(t)
        return out["out"] if isinstance(out, dict) else out

    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with torch.no_grad(), amp:
        logits(torch.randn(1, 3, 64, 64))  # one-time library set-up
    x = torch.randn(1, 3, side, side)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _vm("VmRSS")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = logits(x).float()
    real = _vm("VmHWM") - before
    del y
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        est = measure(logits, x).bytes(1, side, side)
    return f"| {model} | {precision} | {side}x{side} | {est / 2**30:.3f} | {real / 2**30:.3f} | {est / real:.2f} |"


if __name__ == "__main__":
    if len(sys.argv) == 4:
        print(_one_case(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
    else:
        print("| model | precision | image | estimate GiB | measured GiB | estimate / measured |")
        print("|---|---|---|---|---|---|")
        for model in ("unet", "deeplabv3_resnet50"):
            for precision in ("32", "bf16"):
                for side in (512, 1024):
                    args = [sys.executable, __file__, model, str(side), precision]
                    out = subprocess.run(args, capture_output=True, text=True, check=True)
                    print(out.stdout.strip().splitlines()[-1])

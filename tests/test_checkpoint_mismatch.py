"""A checkpoint that does not fit the run (issue 6): resuming with another model or other
classes, evaluating on data with other classes, and ``model.weights_path`` of another
architecture or class count each stop early with one message naming the checkpoint's model
and classes, the run's, and the fix (never torch's raw size mismatch)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import TINY, compose_cfg
from seglab import checkpoints, pipeline
from seglab.instantiators import build_module
from seglab.models.unet import UNet

CKPT_HOLDS = r"holds a UNet with num_classes=5 \(background, ellipse, .*\), in_channels=3 "


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A 1-epoch tiny U-Net on shapes (5 classes)."""
    out = tmp_path_factory.mktemp("trained")
    pipeline.train(compose_cfg("train", [*TINY, "trainer.max_epochs=1", "test=false"], out))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture
def no_build(monkeypatch):
    """Fails the test if the run gets as far as building the model (or its data, after)."""

    def refuse(*args, **kwargs):
        raise AssertionError("built the model before refusing the checkpoint")

    monkeypatch.setattr(pipeline, "build_module", refuse)  # train.py
    monkeypatch.setattr(checkpoints, "build_module", refuse)  # eval.py (module_from_checkpoint)


# ------------------------------------------------------------------ (a) resume: train.py
def test_resume_with_other_classes_stops_before_building(make_cfg, ckpt, no_build):
    cfg = make_cfg("train", "data=folder", f"ckpt_path={ckpt}")
    with pytest.raises(ValueError) as info:
        pipeline.train(cfg)
    msg = str(info.value)
    assert f"checkpoint {ckpt} " in msg
    assert "UNet with num_classes=5 (background, ellipse, rectangle, triangle, star)" in msg
    assert "data 'folder' has num_classes=2 (background, foreground)" in msg
    assert "resume with the checkpoint's data config (data=shapes)" in msg
    assert "without ckpt_path" in msg


def test_resume_with_renamed_classes_or_grey_stops(make_cfg, ckpt, no_build):
    renamed = make_cfg("train", f"ckpt_path={ckpt}", "data.class_names=[a,b,c,d,e]")
    with pytest.raises(ValueError, match=CKPT_HOLDS + r".*num_classes=5 \(a, b, c, d, e\)"):
        pipeline.train(renamed)
    grey = make_cfg(
        "train", f"ckpt_path={ckpt}", "data.in_channels=1", "data.mean=[0.5]", "data.std=[0.2]"
    )
    with pytest.raises(ValueError, match=CKPT_HOLDS + r".*'shapes' has .*in_channels=1"):
        pipeline.train(grey)


@pytest.mark.parametrize(
    ("override", "option"),
    [
        ("model.net.depth=3", "model.net.depth=2 (now 3)"),
        ("model.net.base_channels=8", "model.net.base_channels=4 (now 8)"),
        ("model=segnet", "model.net._target_='seglab.models.unet.UNet' (now "),
    ],
)
def test_resume_with_another_model_stops_before_the_trainer(
    make_cfg, ckpt, monkeypatch, override, option
):
    import lightning

    def no_trainer(*args, **kwargs):
        raise AssertionError("built the trainer before refusing the checkpoint")

    monkeypatch.setattr(lightning.pytorch.Trainer, "__init__", no_trainer)
    cfg = make_cfg("train", f"ckpt_path={ckpt}", override)
    with pytest.raises(ValueError) as info:
        pipeline.train(cfg)
    msg = str(info.value)
    assert f"checkpoint {ckpt} holds a UNet with num_classes=5" in msg
    assert "whose weights do not fit this run's" in msg
    assert option in msg
    assert "resume with the checkpoint's model config" in msg
    assert "size mismatch" not in msg


# ------------------------------------------------------------------ (b) evaluate: eval.py
def test_eval_on_data_with_other_classes_stops_before_the_data(make_cfg, ckpt, no_build):
    with pytest.raises(ValueError) as info:
        pipeline.evaluate(make_cfg("eval", f"ckpt_path={ckpt}", "data=folder"))
    msg = str(info.value)
    assert "UNet with num_classes=5" in msg and "'folder' has num_classes=2" in msg
    assert "leave data= out" in msg and "+data.root=" in msg
    renamed = make_cfg("eval", f"ckpt_path={ckpt}", "+data.class_names=[a,b,c,d,e]", out="r")
    with pytest.raises(ValueError, match=CKPT_HOLDS + r".*num_classes=5 \(a, b, c, d, e\)"):
        pipeline.evaluate(renamed)


def test_eval_with_a_compatible_data_override_still_runs(make_cfg, ckpt):
    metrics = pipeline.evaluate(make_cfg("eval", f"ckpt_path={ckpt}", "+data.eval_batch_size=2"))
    assert 0.0 <= metrics["val/miou"] <= 1.0


# --------------------------------------------------------- (c) model.weights_path=<file>
def test_weights_path_of_another_class_count(make_cfg, ckpt):
    cfg = make_cfg("train", "data=folder", f"model.weights_path={ckpt}")
    with pytest.raises(ValueError) as info:
        build_module(cfg)
    msg = str(info.value)
    assert f"model.weights_path={ckpt} holds a seglab checkpoint of UNet with num_classes=5 " in msg
    assert "(data 'shapes')" in msg and "this run's UNet with num_classes=2" in msg
    assert "of another shape" in msg  # which tensors
    assert "model.pretrained=true" in msg and "from scratch" in msg
    # The same checkpoint fits the same model and classes: a new run from its weights.
    same = build_module(make_cfg("train", f"model.weights_path={ckpt}", out="same"))
    assert same.loaded_weights.startswith("whole net")


@pytest.mark.parametrize("other", [{"depth": 3}, {"num_classes": 2}])
def test_weights_path_state_dict_of_another_net(make_cfg, tmp_path, other):
    args = {"num_classes": 5, "in_channels": 3, "depth": 2, "base_channels": 4, **other}
    path = tmp_path / "net.pt"
    torch.save(UNet(**args).state_dict(), path)
    cfg = make_cfg("train", f"model.weights_path={path}")
    with pytest.raises(ValueError) as info:
        build_module(cfg)
    msg = str(info.value)
    assert f"model.weights_path={path} holds a state dict, which does not fit this run's" in msg
    assert "UNet with num_classes=5" in msg and "of another shape" in msg
    assert "model.pretrained=true" in msg and "has no pretrained encoder" not in msg

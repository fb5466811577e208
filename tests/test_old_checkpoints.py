"""Checkpoints written before the consolidation (issue 17) still load, evaluate and predict:
their saved config names classes where they used to live (``seglab.instance.InstanceModule``)
and holds model keys that only the config reads (``encoder``, ``cpu_bf16``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.checkpoints import load_checkpoint, module_from_checkpoint
from seglab.config import plain
from seglab.instance_module import InstanceModule
from seglab.instantiators import build_module
from seglab.module import SegmentationModule
from seglab.pipeline import evaluate
from seglab.prediction import predict

# A small Mask R-CNN on a few shapes (as in test_instance.py).
INSTANCE = [
    "task=instance",
    "data.num_workers=0",
    "data.dataset.num_samples={train: 2, val: 2, test: 1}",
    "data.instance_min_size=96",
    "data.instance_max_size=128",
    "model.net.detections_per_img=20",
    "model.net.trainable_layers=0",
    "trainer.num_sanity_val_steps=0",
    "++callbacks.rich_progress_bar=null",
    "++callbacks.model_summary=null",
]

CASES = {
    # task: (train overrides, the module's old _target_, old model keys, its class now)
    "semantic": (
        [],
        "seglab.module.SegmentationModule",
        {"encoder": "unet", "cpu_bf16": True},
        SegmentationModule,
    ),
    "instance": (
        INSTANCE,
        "seglab.instance.InstanceModule",
        {"cpu_bf16": False},
        InstanceModule,
    ),
}


def _old_checkpoint(make_cfg, overrides, target, model_keys, path: Path) -> dict:
    """A checkpoint as the code before issue 17 wrote it; returns its state dict."""
    cfg = make_cfg("train", *overrides, tiny=not overrides, out="old")
    torch.manual_seed(0)
    state = build_module(cfg).state_dict()
    saved = plain(cfg)
    saved["model"] = {"_target_": target, **model_keys} | {
        k: v for k, v in saved["model"].items() if k not in ("_target_", *model_keys)
    }
    torch.save({"state_dict": state, "seglab_config": saved}, path)
    return state


@pytest.mark.parametrize("task", CASES)
def test_an_old_checkpoint_builds_evaluates_and_predicts(make_cfg, tmp_path, task):
    overrides, target, model_keys, cls = CASES[task]
    path = tmp_path / "old.ckpt"
    state = _old_checkpoint(make_cfg, overrides, target, model_keys, path)

    module, run = module_from_checkpoint(load_checkpoint(path))
    assert type(module) is cls
    assert run.model._target_ == f"{cls.__module__}.{cls.__name__}"
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key]), key

    metrics = evaluate(make_cfg("eval", f"ckpt_path={path}", out="eval"))
    assert 0.0 <= metrics["val/miou"] <= 1.0
    if task == "instance":
        assert "val/mask_ap" in metrics

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(inputs / "a.png")
    written = predict(
        make_cfg(
            "predict", f"ckpt_path={path}", f"input={inputs}", f"output={tmp_path / 'pred'}",
            "num_workers=0", "progress=false", out="predict",
        )
    )  # fmt: skip
    assert len(written) == 1 and Image.open(written[0]).size == (53, 37)

"""Out of memory in a step (issue 6): a GPU's ``torch.OutOfMemoryError`` and a CPU
allocator's ``RuntimeError`` come out of train / evaluate / predict as
``seglab.out_of_memory.OutOfMemoryError`` (a subclass of both) naming the batch, the image
size, the model and what to lower; a checkpoint saved before stays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab import out_of_memory, pipeline
from seglab.module import SegmentationModule
from seglab.prediction import predict

OOMS = {
    "cuda": lambda: torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of "
        "79.19 GiB of which 1.2 GiB is free."
    ),
    "cpu": lambda: RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 137438953472 bytes. Error code 12 (Cannot allocate "
        "memory)"
    ),
    "cpu-windows": lambda: RuntimeError(
        "[enforce fail at C:\\cb\\c10\\core\\impl\\alloc_cpu.cpp:72] data. not enough memory: "
        "you tried to allocate 137438953472 bytes."
    ),
}


def _fail_forward(monkeypatch, make_error, *, training: bool | None, after: int = 0) -> list:
    """Makes SegmentationModule.forward raise ``make_error()`` once ``after`` calls in the
    given mode (None: any mode) have passed."""
    calls: list[int] = []
    real = SegmentationModule.forward

    def forward(self, x):
        if training is None or self.training == training:
            calls.append(1)
            if len(calls) > after:
                raise make_error()
        return real(self, x)

    monkeypatch.setattr(SegmentationModule, "forward", forward)
    return calls


def _check(err: out_of_memory.OutOfMemoryError, original: type, *parts: str) -> str:
    assert isinstance(err, torch.OutOfMemoryError) and isinstance(err, RuntimeError)
    assert isinstance(err, original)  # callers' except clauses still catch it
    assert type(err.__cause__) is original  # the original error, as raised
    msg = str(err)
    for part in parts:
        assert part in msg, (part, msg)
    return msg


@pytest.mark.parametrize("kind", ["cuda", "cpu"])
def test_oom_in_training_evaluation_and_prediction(make_cfg, tmp_path, monkeypatch, kind):
    make_error = OOMS[kind]
    original = type(make_error())
    where = "GPU memory" if kind == "cuda" else "CPU memory (RAM)"
    # Training: 4 steps an epoch; the 2nd step of epoch 2 runs out, after last.ckpt of epoch 1.
    cfg = make_cfg("train", "trainer.precision=32-true", "test=false")
    calls = _fail_forward(monkeypatch, make_error, training=True, after=5)
    with pytest.raises(out_of_memory.OutOfMemoryError) as info:
        pipeline.train(cfg)
    assert len(calls) == 6
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    msg = _check(
        info.value,
        original,
        f"out of {where} in a training step: a batch of 8 image(s) of 48x48 (HxW), 3 channel",
        "through UNet (model seglab.models.unet.UNet), precision 32-true",
        "data.batch_size (now 8)",
        "data.crop_size, the training crop (now 48)",
        "trainer.precision=bf16-mixed",
        f"The last checkpoint saved, {last}, is kept: resume with ckpt_path={last}",
        f"(The error was: {original.__name__}: ",
    )
    assert "inference.mode=slide" not in msg
    assert torch.load(last, weights_only=True)["epoch"] == 0  # kept, and readable
    # Evaluation (eval.py): whole images, one at a time.
    _fail_forward(monkeypatch, make_error, training=False)
    with pytest.raises(out_of_memory.OutOfMemoryError) as info:
        pipeline.evaluate(make_cfg("eval", f"ckpt_path={last}", out="eval"))
    _check(
        info.value,
        original,
        f"out of {where} in a validation step: a batch of 1 image(s) of ",
        "(HxW), 3 channel(s) through UNet",
        "data.eval_batch_size (now 1)",
        "inference.mode=slide inference.window=<crop size>",
        "trainer.precision=bf16-mixed",
    )
    # predict.py: same-size images in one batch.
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for k in range(3):
        Image.fromarray(np.zeros((40, 56, 3), np.uint8)).save(inputs / f"{k}.png")
    cfg = make_cfg("predict", f"ckpt_path={last}", f"input={inputs}", "num_workers=0", out="p")
    with pytest.raises(out_of_memory.OutOfMemoryError) as info:
        predict(cfg)
    _check(
        info.value,
        original,
        f"out of {where} in a prediction step: a batch of 3 image(s) of 40x56 (HxW)",
        "through UNet",
        "batch_size (predict.py; now 8)",
        "inference.mode=slide",
        "precision=bf16-mixed",
    )


def test_oom_in_validation_during_training(make_cfg, monkeypatch):
    cfg = make_cfg("train", "trainer.max_epochs=1", "inference.flip=true", "test=false")
    _fail_forward(monkeypatch, OOMS["cpu-windows"], training=False)
    with pytest.raises(out_of_memory.OutOfMemoryError) as info:
        pipeline.train(cfg)
    _check(
        info.value,
        RuntimeError,
        "out of CPU memory (RAM) in a validation step: a batch of 1 image(s) of ",
        "data.eval_batch_size (now 1)",
        "fewer test-time views (inference.flip=false",
        "not enough memory: you tried to allocate",
    )


def test_only_out_of_memory_errors_are_rewritten():
    other = RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)")
    assert not out_of_memory.is_oom(other) and not out_of_memory.is_oom(ValueError("out of memory"))
    out_of_memory.raise_if_oom(other, {})  # not an OOM: nothing raised, the caller re-raises it
    assert all(out_of_memory.is_oom(make()) for make in OOMS.values())
    assert out_of_memory.is_oom(RuntimeError("CUDA error: out of memory"))
    done = out_of_memory.OutOfMemoryError("explained")
    out_of_memory.raise_if_oom(done, {})  # already explained: not wrapped twice
    with pytest.raises(out_of_memory.OutOfMemoryError, match="a batch of unknown size"):
        out_of_memory.raise_if_oom(OOMS["cuda"](), {})

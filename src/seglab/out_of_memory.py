"""Out-of-memory errors that say what ran out, on which batch, and what to lower.

An out-of-memory error in a training / evaluation / prediction step (``torch.OutOfMemoryError``
on a GPU, the allocator's ``RuntimeError`` on a CPU) is raised again as ``OutOfMemoryError``,
a subclass of ``torch.OutOfMemoryError`` (itself a ``RuntimeError``), so that ``except``
clauses for either still catch it, and of ``SeglabError`` (the scripts print it as one
message and exit with status 1), with the batch, the image size, the model and what to
lower in its message. ``StepRecorder`` (a callback) notes the batch each step gets;
``explain_oom`` wraps the entry points.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch

from seglab.config import model_name
from seglab.errors import SeglabError


class OutOfMemoryError(SeglabError, torch.OutOfMemoryError):
    """Out of memory in a step, with the batch, the image size, the model and what to lower
    in its message; the original error is its ``__cause__``."""


_OOM_TEXT = ("out of memory", "can't allocate memory", "not enough memory", "not_enough_memory")


def is_oom(err: BaseException) -> bool:
    """A GPU (``torch.OutOfMemoryError``), CPU (``DefaultCPUAllocator: can't allocate
    memory``, ``not enough memory``) or other backend's out-of-memory error."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(t in str(err).lower() for t in _OOM_TEXT)


# What the last step got: {"stage", "shape", "run", "trainer" (a weak reference)}. One
# process runs one step at a time; the entry points clear it when they start.
LAST_STEP: dict[str, Any] = {}

_STAGES = {"train": "training", "sanity_check": "validation", "validate": "validation"}


class StepRecorder(L.Callback):
    """Notes each batch's shape and stage (for ``explain_oom``); costs a dict update."""

    def _note(self, trainer: L.Trainer, module: L.LightningModule, batch: Any) -> None:
        image = batch.get("image") if isinstance(batch, Mapping) else None
        stage = trainer.state.stage.value if trainer.state.stage else "train"
        LAST_STEP.update(
            stage=_STAGES.get(stage, stage),
            shape=tuple(image.shape) if isinstance(image, torch.Tensor) else None,
            run=getattr(module, "run_config", None) or {},
            precision=str(trainer.precision),
            trainer=weakref.ref(trainer),
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._note(trainer, pl_module, batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        self._note(trainer, pl_module, batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dl_idx=0) -> None:
        self._note(trainer, pl_module, batch)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def oom_message(err: BaseException, step: Mapping[str, Any]) -> str:
    """What ran out of memory, on which batch, and what to lower (by stage)."""
    run = step.get("run") or {}
    data, model = run.get("data") or {}, run.get("model") or {}
    inference = run.get("inference") or {}
    stage, shape = step.get("stage", "training"), step.get("shape")
    text = str(err).lower()
    if (isinstance(err, torch.OutOfMemoryError) and "cpu" not in text) or "cuda" in text:
        where = "GPU memory"
    elif "mps" in text:
        where = "MPS (Apple GPU) memory"
    else:
        where = "CPU memory (RAM)"
    if shape and len(shape) == 4:
        batch = (
            f"a batch of {shape[0]} image(s) of {shape[2]}x{shape[3]} (HxW), {shape[1]} channel(s)"
        )
    else:
        batch = "a batch of unknown size"
    precision = step.get("precision") or str((run.get("trainer") or {}).get("precision"))
    tips: list[str] = []
    if stage == "training":
        tips.append(f"data.batch_size (now {data.get('batch_size')})")
        if data.get("crop_size"):
            tips.append(f"data.crop_size, the training crop (now {data.get('crop_size')})")
    elif stage == "prediction":
        tips.append(f"batch_size (predict.py; now {step.get('batch_size')})")
    else:
        tips.append(f"data.eval_batch_size (now {data.get('eval_batch_size')})")
    if stage != "training":
        if inference.get("mode", "whole") == "whole":
            tips.append(
                "run big images in windows: inference.mode=slide inference.window=<crop size>"
            )
        elif inference.get("window"):
            tips.append(f"inference.window (now {inference.get('window')})")
        if inference.get("flip") or len(inference.get("scales") or [1.0]) > 1:
            tips.append("fewer test-time views (inference.flip=false, inference.scales=[1.0])")
    if "bf16" not in precision and not precision.startswith("16"):
        key = "precision" if stage == "prediction" else "trainer.precision"
        tips.append(f"mixed precision: {key}=bf16-mixed, or 16-mixed on GPUs without bf16")
    if model.get("compile"):
        tips.append("model.compile=false (compiled graphs can hold extra buffers)")
    kept = ""
    trainer = step.get("trainer")
    trainer = trainer() if trainer is not None else None
    ckpt_cb = getattr(trainer, "checkpoint_callback", None)
    last = getattr(ckpt_cb, "last_model_path", "") if stage == "training" else ""
    if last:
        kept = f" The last checkpoint saved, {last}, is kept: resume with ckpt_path={last}."
    return (
        f"out of {where} in a {stage} step: {batch} through {model_name(run)} (model "
        f"{model.get('net', {}).get('_target_', '?')}), precision {precision}. Lower what a "
        f"step needs: {'; '.join(tips)}.{kept} (The error was: {type(err).__name__}: "
        f"{_first_line(err)})"
    )


def raise_if_oom(err: BaseException, step: Mapping[str, Any]) -> None:
    """Raises ``OutOfMemoryError`` explaining ``err`` if it is an out-of-memory error."""
    if is_oom(err) and not isinstance(err, OutOfMemoryError):
        raise OutOfMemoryError(oom_message(err, step)) from err


def explain_oom(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps an entry point (train, evaluate): an out-of-memory error in any step comes out
    as ``OutOfMemoryError`` with what the last step (``StepRecorder``) got."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        LAST_STEP.clear()
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise_if_oom(err, dict(LAST_STEP))
            raise
        finally:
            LAST_STEP.clear()

    return wrapped

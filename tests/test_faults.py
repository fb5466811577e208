"""Crash safety: atomic checkpoints, SIGKILL / SIGTERM mid-training, non-finite losses and
checkpoints whose pickle would run code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from helpers import ROOT, TINY
from seglab import pipeline
from seglab.checkpoint_io import AtomicCheckpointIO
from seglab.checkpoints import load_checkpoint
from seglab.instantiators import build_module
from seglab.models.pretrained import load_pretrained
from seglab.task_module import NonFiniteLossError

# The subprocess runs: TINY, without the per-epoch TensorBoard figures, for many epochs (the
# tests stop them long before the end).
RUN = [
    *(o for o in TINY if not o.startswith("trainer.max_epochs=")),
    "++callbacks.visualizer=null",
    "trainer.max_epochs=200",
]


# -- the CheckpointIO plugin -------------------------------------------------------------------
def test_trainer_configs_use_the_atomic_checkpoint_io(make_cfg):
    for option in ("default", "ddp", "ddp_sim"):
        cfg = make_cfg("train", f"trainer={option}")
        trainer = instantiate(cfg.trainer, logger=False)
        assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO), option


def test_last_ckpt_is_the_latest_state_even_when_the_metric_did_not_improve(make_cfg):
    # Monitoring "epoch" with mode=min: only epoch 0 is ever the best, so Lightning's own
    # ModelCheckpoint would leave last.ckpt at epoch 0 after epochs 1 and 2.
    cfg = make_cfg(
        "train",
        "trainer.max_epochs=3",
        "callbacks.model_checkpoint.monitor=epoch",
        "callbacks.model_checkpoint.mode=min",
        "++callbacks.visualizer=null",
    )
    metrics = pipeline.train(cfg)
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 12)
    assert Path(metrics["best_checkpoint"]).name == "epoch_000.ckpt"
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["epoch_000.ckpt", "last.ckpt"]


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1]
    )
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)
    # The data reaches the disk before the rename, and the rename itself is made durable.
    assert events == ["fsync", "replace", "fsync"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # like any file, not mkstemp's 0600

    real_save = torch.save

    def crash_midway(obj, f, *args, **kwargs):  # a full disk / a kill half way through
        f.write(b"PK\x03\x04" + b"\0" * 1000)
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)

    # Interrupted between the write and the rename: same result.
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", real_save)
    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)

    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no partial, no temp
    old = torch.load(path, weights_only=True)
    assert old["epoch"] == 1 and torch.equal(old["state_dict"]["w"], torch.ones(3))
    monkeypatch.setattr(os, "replace", real_replace)
    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert io.load_checkpoint(path)["epoch"] == 2


# -- killed and interrupted runs, as subprocesses ----------------------------------------------
def _start(run_dir: Path, *extra: str, slow_fsync: bool = False) -> subprocess.Popen:
    """Starts ``src/train.py`` with ``RUN`` and ``extra`` overrides. ``slow_fsync``: every
    fsync sleeps 0.5 s, which holds each checkpoint write open (temporary file written, not
    yet renamed) long enough for the test to kill the process in the middle of it."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), env.get("PYTHONPATH")]))
    args = [*RUN, *extra, f"hydra.run.dir={run_dir}"]
    if slow_fsync:
        code = (
            "import os, runpy, sys, time\n"
            "fsync = os.fsync\n"
            "os.fsync = lambda fd: (time.sleep(0.5), fsync(fd))[1]\n"
            "sys.argv = ['src/train.py', *sys.argv[1:]]\n"
            "runpy.run_path('src/train.py', run_name='__main__')\n"
        )
        cmd = [sys.executable, "-c", code, *args]
    else:
        cmd = [sys.executable, "src/train.py", *args]
    with (run_dir.parent / f"{run_dir.name}.out").open("w") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _output(proc: subprocess.Popen, run_dir: Path) -> str:
    return (run_dir.parent / f"{run_dir.name}.out").read_text()[-4000:]


def _wait_for(proc: subprocess.Popen, run_dir: Path, found, timeout: float = 60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        hit = found()
        if hit:
            return hit
        assert proc.poll() is None, "the run ended early:\n" + _output(proc, run_dir)
        time.sleep(0.01)
    proc.kill()
    pytest.fail("timed out waiting for the run:\n" + _output(proc, run_dir))


def _resume(make_cfg, ckpt: Path, out: str) -> dict:
    """Resumes from ``ckpt`` in-process for one more epoch; returns the new last.ckpt."""
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    cfg = make_cfg("train", "++callbacks.visualizer=null", f"ckpt_path={ckpt}", out=out)
    cfg.trainer.max_epochs = epoch + 2
    metrics = pipeline.train(cfg)
    assert 0 <= metrics["val/miou"] <= 1
    return torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)


def test_sigkill_during_a_checkpoint_write_keeps_last_ckpt_loadable(tmp_path, make_cfg):
    run_dir = tmp_path / "killed"
    proc = _start(run_dir, slow_fsync=True)
    ckpts = run_dir / "checkpoints"
    try:
        _wait_for(proc, run_dir, lambda: (ckpts / "last.ckpt").is_file())
        # Training moved on; kill it while it writes the next last.ckpt.
        tmp = _wait_for(proc, run_dir, lambda: next(ckpts.glob(".last.ckpt.*.tmp"), None))
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert tmp.exists()  # the interrupted write: a stale temporary file, not a *.ckpt
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and last["global_step"] == 4  # the previous, complete one
    for ckpt in ckpts.glob("*.ckpt"):
        torch.load(ckpt, weights_only=True)

    resumed = _resume(make_cfg, ckpts / "last.ckpt", "resumed_killed")
    assert resumed["epoch"] == 1 and resumed["global_step"] == 8


def test_sigterm_saves_an_interrupted_checkpoint_that_resumes(tmp_path, make_cfg):
    run_dir = tmp_path / "preempted"
    proc = _start(run_dir)
    ckpts = run_dir / "checkpoints"
    try:
        _wait_for(proc, run_dir, lambda: (ckpts / "last.ckpt").is_file())
        proc.send_signal(signal.SIGTERM)  # mid-training: epoch 1 is running
        proc.wait(60)
    finally:
        proc.kill()
    out = _output(proc, run_dir)
    assert proc.returncode == 143, out  # 128 + SIGTERM: not "finished" for a scheduler
    assert "resume with ckpt_path=" in out, out
    interrupted = torch.load(ckpts / "interrupted.ckpt", weights_only=True)
    assert interrupted["global_step"] >= 4 and interrupted["seglab_config"]
    assert not list(ckpts.glob(".*.tmp"))

    resumed = _resume(make_cfg, ckpts / "interrupted.ckpt", "resumed_preempted")
    assert resumed["global_step"] > interrupted["global_step"]
    assert resumed["epoch"] == interrupted["epoch"] + 1


# -- non-finite losses -------------------------------------------------------------------------
class InjectNaN(L.Callback):
    """Puts a NaN pixel into the batch of global step ``at_step`` and records whether that
    step changed the model (``InjectNaN.changed``)."""

    changed: bool | None = None

    def __init__(self, at_step: int) -> None:
        self.at_step, self.before = at_step, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            batch["image"][0, 0, 3, 3] = float("nan")
            self.before = {k: v.clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.before is not None:
            after = pl_module.state_dict()
            InjectNaN.changed = any(not torch.equal(v, after[k]) for k, v in self.before.items())
            self.before = None


def _nan_cfg(make_cfg, mode: str, out: str):
    return make_cfg(
        "train",
        "++callbacks.visualizer=null",
        "+callbacks.inject_nan._target_=test_faults.InjectNaN",
        "+callbacks.inject_nan.at_step=5",  # epoch 1 (4 batches an epoch), batch 1
        f"model.nonfinite_loss={mode}",
        out=out,
    )


def _all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nonfinite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(make_cfg):
    cfg = _nan_cfg(make_cfg, "error", "nan_error")
    with pytest.raises(NonFiniteLossError) as err:
        pipeline.train(cfg)
    msg = str(err.value)
    for part in (
        "non-finite training loss (nan) at global step 5",
        "epoch 1, batch index 1",
        "learning rate(s): rest=",
        "the input batch itself contains NaN",
        "last.ckpt, is the last good state",
        "optimizer.lr=",
        "trainer.precision=32",
        "model.nonfinite_loss=skip",
    ):
        assert part in msg, (part, msg)
    ckpts = Path(cfg.paths.output_dir) / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4 and _all_finite(last["state_dict"])


def test_nonfinite_loss_skip_trains_past_the_bad_batch(make_cfg):
    InjectNaN.changed = None
    cfg = _nan_cfg(make_cfg, "skip", "nan_skip")
    metrics = pipeline.train(cfg)
    assert InjectNaN.changed is False  # no update, BatchNorm statistics restored
    last = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 8
    assert last["seglab_skipped_steps"] == 1
    assert _all_finite(last["state_dict"])
    assert 0 <= metrics["val/miou"] <= 1


def test_nonfinite_loss_option_is_checked(make_cfg):
    with pytest.raises(ValueError, match="model.nonfinite_loss='ignore'"):
        build_module(make_cfg("train", "model.nonfinite_loss=ignore"))


# -- loading never runs code -------------------------------------------------------------------
class _RunsCode:
    """Pickles as a call to ``os.system``: loading the file with full pickle runs it."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_checkpoint_whose_pickle_runs_code_is_refused(tmp_path, make_cfg):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "seglab_config": {}, "x": _RunsCode(f"touch '{marker}'")}, evil)
    torch.load(evil, weights_only=False)  # the file really runs code when fully unpickled
    assert marker.exists()
    marker.unlink()

    refused = rf"{re.escape(str(evil))} was refused: loading it would build \S*system, which could run code"
    with pytest.raises(ValueError, match=refused):
        load_checkpoint(evil)
    with pytest.raises(ValueError, match=refused):  # eval.py / predict.py
        pipeline.evaluate(make_cfg("eval", f"ckpt_path={evil}"))
    with pytest.raises(ValueError, match=refused):  # model.weights_path
        load_pretrained(nn.Conv2d(3, 2, 1), weights_path=str(evil))
    with pytest.raises(ValueError, match=refused):  # as the model config builds it
        build_module(make_cfg("train", f"model.weights_path={evil}"))
    with pytest.raises(ValueError, match=refused):  # resuming: trainer.fit(ckpt_path=...)
        AtomicCheckpointIO().load_checkpoint(evil)
    assert not marker.exists()

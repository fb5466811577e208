"""Interrupted training runs, as subprocesses: Ctrl+C (SIGINT) on one process and SIGTERM
(preemption) on a two-process CPU DDP run."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from test_faults import _output, _resume, _start, _wait_for


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited


def _interrupt(proc, run_dir: Path, signum: int) -> None:
    """Waits until the run trained past its first epoch (last.ckpt written), then sends
    ``signum`` to it (the main process only, as ``kill <pid>`` would)."""
    _wait_for(proc, run_dir, lambda: (run_dir / "checkpoints" / "last.ckpt").is_file())
    proc.send_signal(signum)


def test_ctrl_c_saves_an_interrupted_checkpoint_and_exits_130(tmp_path, make_cfg):
    run_dir = tmp_path / "ctrl_c"
    proc = _start(run_dir)
    ckpts = run_dir / "checkpoints"
    try:
        _interrupt(proc, run_dir, signal.SIGINT)
        proc.wait(60)
    finally:
        proc.kill()
    out = _output(proc, run_dir)
    assert proc.returncode == 130, out  # 128 + SIGINT, as a shell reports Ctrl+C
    assert "KeyboardInterrupt at epoch" in out and "resume with ckpt_path=" in out, out
    assert not (run_dir / "metrics.json").exists()  # no evaluation after an interrupted fit
    interrupted = torch.load(ckpts / "interrupted.ckpt", weights_only=True)
    assert interrupted["global_step"] >= 4 and interrupted["seglab_config"]
    assert not list(ckpts.glob(".*.tmp"))
    resumed = _resume(make_cfg, ckpts / "interrupted.ckpt", "resumed_ctrl_c")
    assert resumed["global_step"] > interrupted["global_step"]


# Where the signal lands. "kill": sent from outside to rank 0 only once the first epoch is
# done (``kill <pid>``; a scheduler would signal every process). The others: rank 0 signals
# itself from inside a hook, while the ranks are in validation's or a checkpoint save's
# collectives; Lightning's own SIGTERM handler, which broadcasts from inside the signal
# handler, deadlocked there.
DDP_CASES = [
    ("kill", "SIGTERM"),
    ("kill", "SIGINT"),
    ("on_validation_batch_start", "SIGTERM"),
    ("on_save_checkpoint", "SIGTERM"),
    ("on_save_checkpoint", "SIGINT"),
]


@pytest.mark.parametrize(("where", "what"), DDP_CASES, ids=["-".join(c) for c in DDP_CASES])
def test_a_signal_stops_every_ddp_process_at_one_step_with_one_checkpoint(
    tmp_path, make_cfg, where, what
):
    """Every rank stops at the same training step, one ``interrupted.ckpt`` is written, the
    exit status is 128 + the signal, and the run resumes from the checkpoint."""
    signum = signal.Signals[what]
    status, reported = 128 + signum, {"SIGTERM": "SIGTERM", "SIGINT": "KeyboardInterrupt"}[what]
    run_dir = tmp_path / "ddp_interrupted"
    extra = ["trainer.devices=2", "trainer.accelerator=cpu"]
    if where != "kill":
        extra += [
            "+callbacks.signal_at._target_=signal_at.SignalAt",
            f"+callbacks.signal_at.hook={where}",
            f"+callbacks.signal_at.signum={what}",
        ]
    proc = _start(run_dir, *extra)
    ckpts = run_dir / "checkpoints"
    try:
        _wait_for(proc, run_dir, lambda: _children(proc.pid))
        rank1 = _children(proc.pid)  # Lightning starts rank 1 as a child of rank 0
        if where == "kill":
            _interrupt(proc, run_dir, signum)
        proc.wait(60)  # no rank hangs in a collective waiting for the other
        end = time.monotonic() + 30
        while any(map(_alive, rank1)) and time.monotonic() < end:
            time.sleep(0.1)
        assert not any(map(_alive, rank1)), "rank 1 outlived rank 0"
    finally:
        proc.kill()
        for pid in _children(proc.pid):
            os.kill(pid, signal.SIGKILL)
    out = _output(proc, run_dir)
    assert proc.returncode == status, out
    assert out.count(f"{reported} at epoch") == 1, out  # reported by rank 0 only
    assert sorted(p.name for p in ckpts.glob("interrupted*")) == ["interrupted.ckpt"]
    assert not list(ckpts.glob(".*.tmp"))
    interrupted = torch.load(ckpts / "interrupted.ckpt", weights_only=True)
    # 32 images over 2 processes, 8 a batch: 2 steps an epoch, and epoch 0 was done.
    assert interrupted["global_step"] >= 2 and interrupted["seglab_config"]
    resumed = _resume(make_cfg, ckpts / "interrupted.ckpt", f"resumed_{what}")
    assert resumed["global_step"] > interrupted["global_step"]
    assert resumed["epoch"] == interrupted["epoch"] + 1

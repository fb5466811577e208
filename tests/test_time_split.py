"""``time_split.json``: the parts of a tiny training run's wall time add up, "other" stays
small, and a slow checkpoint write shows in "checkpoints"."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from seglab import checkpoint_io
from seglab.callbacks import WeightEMA
from seglab.pipeline import train
from seglab.time_split import PARTS, TimeSplit, process_start_time

# The visualizer's figures are legitimately "other" but would dominate a run this short.
NO_FIGURES = "++callbacks.visualizer=null"


def _run(make_cfg, *overrides: str) -> dict[str, Any]:
    start = time.time()  # start-up counts from here, not from pytest's own start
    cfg = make_cfg("train", f"callbacks.time_split.start={start}", NO_FIGURES, *overrides)
    train(cfg)
    data = json.loads((Path(cfg.paths.output_dir) / "time_split.json").read_text())
    assert data["wall_s"] == pytest.approx(time.time() - start, abs=2.0)
    return data


def _check_sum(data: dict[str, Any]) -> None:
    parts, wall = data["parts"], data["wall_s"]
    assert list(parts) == list(PARTS)
    assert all(v >= 0 for v in parts.values()), parts
    assert sum(parts.values()) == pytest.approx(wall, rel=0.01)
    # The measured parts cover the run (0.5 s of slack: a run this short is mostly noise).
    assert parts["other"] < 0.1 * wall + 0.5, parts


def test_time_split_adds_up(make_cfg):
    data = _run(make_cfg)
    _check_sum(data)
    parts = data["parts"]
    assert parts["startup"] > 0 and parts["training"] > 0 and parts["evaluation"] > 0
    assert parts["loading"] > 0  # num_workers=0: batches are loaded in this process
    # One point per validation epoch of fit (trainer.max_epochs=2), in time order.
    curve = data["curve"]
    assert len(curve) == 2
    assert all(0 < t < data["wall_s"] and 0 <= miou <= 1 for t, miou in curve)
    assert curve[0][0] < curve[1][0]


def test_slow_checkpoint_writes_count_as_checkpoints(make_cfg, monkeypatch):
    saves = []
    write = checkpoint_io.atomic_torch_save

    def slow_write(obj: Any, path: Any) -> None:
        saves.append(path)
        time.sleep(0.3)
        write(obj, path)

    monkeypatch.setattr(checkpoint_io, "atomic_torch_save", slow_write)
    data = _run(make_cfg, "trainer.max_epochs=1")
    _check_sum(data)
    assert saves  # the best checkpoint and last.ckpt
    assert 0.3 * len(saves) <= data["parts"]["checkpoints"] < 0.3 * len(saves) + 1.0


def test_process_start_is_before_now():
    assert time.time() - 30 * 86400 < process_start_time() <= time.time()


def test_next_run_in_the_same_process_starts_its_own_clock(tmp_path):
    """A multirun's 2nd job (same process) counts from the 1st job's last write, not from the
    process start, so its wall time is not cumulative."""
    TimeSplit(start=time.time() - 100.0).write(tmp_path / "job0")
    time.sleep(0.2)
    second = TimeSplit().write(tmp_path / "job1")
    wall = json.loads(second.read_text())["wall_s"]
    assert 0.2 <= wall < 5.0


def test_other_callbacks_batch_end_work_counts_as_training(make_cfg, monkeypatch):
    """An EMA update (another callback's batch-end hook) is training, not waiting for data:
    TimeSplit runs after the other callbacks."""
    update = WeightEMA.on_train_batch_end
    calls = []

    def slow_update(self, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        time.sleep(0.05)
        update(self, *args, **kwargs)

    monkeypatch.setattr(WeightEMA, "on_train_batch_end", slow_update)
    data = _run(make_cfg, "trainer.max_epochs=1", "callbacks=[default,ema]")
    _check_sum(data)
    slept = 0.05 * len(calls)
    assert calls and data["parts"]["loading"] < slept
    assert data["parts"]["training"] >= slept

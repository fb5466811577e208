"""``time_split.json``: the parts of a tiny training run's wall time add up, "other" stays
small, and a slow checkpoint write shows in "checkpoints"."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from seglab import checkpoint_io
from seglab.pipeline import train
from seglab.time_split import PARTS, process_start_time

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

"""``ckpt_path=last`` and ``auto_resume=true`` find the checkpoint a user means."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from seglab import pipeline
from seglab.errors import MissingFileError
from seglab.resume import resolve_resume


def _touch(path: Path, when: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (when, when))
    return path


def test_last_picks_the_newest_state_of_the_named_or_newest_run(make_cfg, tmp_path):
    outputs = tmp_path / "outputs"
    now = time.time()
    old = _touch(outputs / "d1/t1/checkpoints/last.ckpt", now - 300)
    (outputs / "d1/t1/train.log").write_text("")
    _touch(outputs / "d1/t2/checkpoints/last.ckpt", now - 200)
    (outputs / "d1/t2/train.log").write_text("")
    killed = _touch(outputs / "d1/t2/checkpoints/interrupted.ckpt", now - 100)
    _touch(outputs / "d1/e1/checkpoints/last.ckpt", now)  # an eval run: another task
    (outputs / "d1/e1/eval.log").write_text("")

    def resolved(*overrides: str, out: str = "run") -> str | None:
        cfg = make_cfg("train", *overrides, out=out)
        with open_dict(cfg):
            cfg.paths.log_dir = str(outputs)
        resolve_resume(cfg)
        return cfg.ckpt_path

    # No run named: the newest train run's newest state (the interrupted one).
    assert resolved("ckpt_path=last") == str(killed)
    # The run named by hydra.run.dir (here its output folder) wins when it holds one.
    named = _touch(tmp_path / "named/checkpoints/last.ckpt", now - 1000)
    assert resolved("ckpt_path=last", out="named") == str(named)
    assert resolved("auto_resume=true") == str(killed)
    assert resolved("auto_resume=true", "ckpt_path=" + str(old)) == str(old)  # explicit wins
    shutil.rmtree(outputs)
    assert resolved("auto_resume=true") is None  # nothing to resume: a fresh start
    with pytest.raises(MissingFileError, match=r"ckpt_path=last: no checkpoints/last\.ckpt"):
        resolved("ckpt_path=last")


def test_ckpt_path_last_resumes_the_run(make_cfg, tmp_path):
    first = make_cfg("train", "trainer.max_epochs=1", "test=false")
    pipeline.train(first)
    again = make_cfg("train", "ckpt_path=last", "trainer.max_epochs=2", "test=false")
    resumed = pipeline.train(again)  # the same run folder: resumes its last.ckpt
    assert again.ckpt_path == str(tmp_path / "run/checkpoints/last.ckpt")
    straight = pipeline.train(make_cfg("train", "trainer.max_epochs=2", "test=false", out="s"))
    assert resumed["val/confusion_matrix"] == straight["val/confusion_matrix"]  # exact resume
    last = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert last["epoch"] == 1

"""The entry scripts as users run them, in subprocesses: DDP, multirun, an Optuna sweep."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from helpers import ROOT, TINY
from seglab import pipeline
from seglab.per_image import load_per_image


def run_script(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, f"src/{script}", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def warning_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The Python warnings a script printed (``<file>.py:<line>: <message>``)."""
    return [
        line for line in (proc.stdout + proc.stderr).splitlines() if re.search(r"\.py:\d+: ", line)
    ]


def test_ddp_two_processes_match_a_single_process(tmp_path, make_cfg):
    run_dir = tmp_path / "ddp"
    # 7 validation images over 2 processes: a padding sampler would count one twice.
    proc = run_script(
        "train.py",
        *TINY,
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "seed=1",
        f"hydra.run.dir={run_dir}",
    )
    # A quiet console: none of the 93 sync_dist or Lightning-internal warnings of before.
    assert warning_lines(proc) == []
    ddp = json.loads((run_dir / "metrics.json").read_text())
    # One run folder, one set of outputs (rank 1 wrote no second metrics, logs or configs).
    assert [p.name for p in tmp_path.iterdir()] == ["ddp"]
    assert len(list(run_dir.rglob("metrics.json"))) == 1
    writers = {p.name.split(".")[-2] for p in (run_dir / "tensorboard").glob("events.out.*")}
    assert len(writers) == 1  # event files from one process (rank 0) only

    pipeline.evaluate(
        make_cfg("eval", f"ckpt_path={ddp['best_checkpoint']}", "+trainer.devices=1", out="single")
    )
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert single["val/confusion_matrix"] == ddp["val/confusion_matrix"]
    assert single["val/miou"] == pytest.approx(ddp["val/miou"], abs=1e-12)
    # Every figure summed in integer states (calibration, boundary) is exactly equal; the
    # per-image matrices were gathered from both processes into one set.
    new = ("ece", "nll", "brier", "mbiou", "biou", "mbf", "bf", "reliability")
    keys = [k for k in ddp if k.startswith("val/") and k.split("/")[1] in new]
    assert len(keys) == 6 + 2 * 5  # the per-class biou / bf of the 5 classes included
    assert {k: single[k] for k in keys} == {k: ddp[k] for k in keys}
    a, b = (load_per_image(d / "per_image_val.npz") for d in (run_dir, tmp_path / "single"))
    assert a["index"].tolist() == b["index"].tolist() == list(range(7))
    assert np.array_equal(a["confmat"], b["confmat"])
    # Exactly the labelled pixels of the 7 validation images were counted.
    labelled = sum(int((s["mask"] != 255).sum()) for s in _val_samples(make_cfg))
    assert sum(map(sum, ddp["val/confusion_matrix"])) == labelled


def _val_samples(make_cfg):
    from hydra.utils import instantiate

    dm = instantiate(make_cfg("train", out="data").data)
    ds = dm.dataset("val")
    return [ds[i] for i in range(len(ds))]


def test_multirun_gives_each_job_its_own_folder(tmp_path):
    sweep = tmp_path / "sweep"
    run_script(
        "train.py",
        "-m",
        *TINY,
        "trainer.max_epochs=1",
        "optimizer.lr=0.001,0.01",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    lrs = []
    for job in jobs:
        assert (job / "metrics.json").is_file() and (job / "checkpoints" / "last.ckpt").is_file()
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        lrs.append(cfg["optimizer"]["lr"])
    assert lrs == [0.001, 0.01]


def test_optuna_sweep_runs_trials_and_reports_the_best(tmp_path):
    sweep = tmp_path / "optuna"
    run_script(
        "train.py",
        "hparams_search=shapes_optuna",
        *TINY,
        "trainer.max_epochs=1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweep.dir={sweep}",
    )
    trials = [json.loads((sweep / str(i) / "metrics.json").read_text()) for i in range(2)]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(t["val/miou_best"] for t in trials))


def test_predict_and_eval_scripts_run(tmp_path):
    run_dir = tmp_path / "train"
    proc = run_script("train.py", *TINY, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}")
    assert warning_lines(proc) == []  # a quiet console
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["seglab_config"]["data"]["name"] == "shapes"
    img = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (45, 33), (200, 10, 10)).save(img)
    run_script(
        "predict.py",
        f"ckpt_path={ckpt}",
        f"input={img}",
        f"output={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'p'}",
    )
    assert Image.open(tmp_path / "out" / "img.png").size == (45, 33)
    out = run_script(
        "eval.py", f"ckpt_path={ckpt}", "split=test", f"hydra.run.dir={tmp_path / 'e'}"
    )
    assert "test metrics" in out.stdout
    assert "test/miou" in json.loads((tmp_path / "e" / "metrics.json").read_text())

"""Several machines and job launchers, as users run them (subprocesses): two nodes through
torchrun on one machine, a joblib multirun, a submitit job, and the SLURM launcher config."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import ROOT, TINY
from seglab import pipeline
from test_cli import run_script

ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_through_torchrun_train_like_one_machine(tmp_path, make_cfg):
    """Two ``torchrun --nnodes=2`` agents on one machine, each a "node" with one CPU process,
    started as on two machines: same command, its own --node_rank, same run folder."""
    run_dir, port = tmp_path / "two_nodes", _free_port()
    logs = [tmp_path / f"node{rank}.out" for rank in (0, 1)]
    procs = []
    for rank, log in enumerate(logs):
        cmd = [
            *(sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1"),
            *(f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}"),
            "src/train.py",
            *TINY,
            "trainer=ddp_multinode",
            "trainer.accelerator=cpu",
            "trainer.sync_batchnorm=false",
            "seed=1",
            f"hydra.run.dir={run_dir}",
        ]
        with log.open("w") as out:
            procs.append(
                subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT)
            )
    try:
        for proc in procs:
            proc.wait(240)
    finally:
        for proc in procs:
            proc.kill()
    outputs = [log.read_text()[-5000:] for log in logs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    # One run folder, one set of outputs: rank 1 wrote no metrics, logs or checkpoints.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node0.out", "node1.out", "two_nodes"]
    assert [p.relative_to(run_dir) for p in run_dir.rglob("metrics.json")] == [Path("metrics.json")]
    writers = {p.name.split(".")[-2] for p in (run_dir / "tensorboard").glob("events.out.*")}
    assert len(writers) == 1
    ddp = json.loads((run_dir / "metrics.json").read_text())
    # World size 2: the 32 training images split over 2 processes, 8 a batch -> 2 steps an
    # epoch (one process would take 4).
    ckpts = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in [p.name for p in ckpts]
    for path in ckpts:
        ckpt = torch.load(path, weights_only=True)
        assert ckpt["global_step"] == 2 * (ckpt["epoch"] + 1), path.name
        assert ckpt["seglab_config"]["trainer"]["num_nodes"] == 2

    # The multi-node evaluation equals a single-process one of the same checkpoint.
    single = pipeline.evaluate(
        make_cfg("eval", f"ckpt_path={ddp['best_checkpoint']}", "+trainer.devices=1", out="single")
    )
    assert single["val/confusion_matrix"] == ddp["val/confusion_matrix"]
    assert single["val/miou"] == pytest.approx(ddp["val/miou"], abs=1e-12)


def test_local_and_submitit_launchers_run_tiny_jobs(tmp_path):
    """``hydra/launcher=local`` (joblib: jobs in parallel worker processes, one with
    DataLoader workers of its own) and submitit's local executor (the job pickled, run in
    another process and its result read back, as on SLURM)."""
    tiny = [o for o in TINY if not o.startswith(("trainer.max_epochs=", "data.num_workers="))]
    sweep = tmp_path / "joblib"
    out = run_script(
        "train.py",
        "-m",
        "hydra/launcher=local",
        *tiny,
        "trainer.max_epochs=1",
        "data.num_workers=0,1",
        f"hydra.sweep.dir={sweep}",
    )
    assert "Joblib.Parallel(n_jobs=2" in out.stdout + out.stderr
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job in jobs:
        assert "val/miou" in json.loads((sweep / job / "metrics.json").read_text())
        cfg = yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())
        assert cfg["data"]["num_workers"] == int(job)
        torch.load(sweep / job / "checkpoints" / "last.ckpt", weights_only=True)

    sweep = tmp_path / "submitit"
    run_script(
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        *tiny,
        "trainer.max_epochs=1",
        "data.num_workers=0",
        f"hydra.sweep.dir={sweep}",
    )
    assert "val/miou" in json.loads((sweep / "0" / "metrics.json").read_text())
    assert list((sweep / ".submitit").rglob("*_result.pkl"))  # went through submitit


class _Submitted(Exception):
    pass


def test_slurm_launcher_asks_for_the_trainers_nodes_and_devices(make_cfg, monkeypatch, tmp_path):
    """The sbatch script ``hydra/launcher=slurm`` would submit (no cluster needed: the
    submission itself is replaced by a capture of the script)."""
    import shutil

    import submitit
    from hydra.utils import instantiate

    cfg = make_cfg(
        "train",
        "hydra/launcher=slurm",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda cmd: "/usr/bin/srun" if cmd == "srun" else which(cmd)
    )
    scripts = []

    def submit(self, fn, *args):
        scripts.append(self._executor._make_submission_file_text("<command>", "<uid>"))
        raise _Submitted

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submit)
    with pytest.raises(_Submitted):
        launcher.launch([["optimizer.lr=0.01"]], initial_job_idx=0)
    flags = {line.split()[1] for line in scripts[0].splitlines() if line.startswith("#SBATCH")}
    for flag in (
        "--nodes=2",  # trainer.num_nodes
        "--ntasks-per-node=4",  # trainer.devices
        "--gpus-per-node=4",
        "--cpus-per-task=8",
        "--mem=64GB",
        "--time=720",
        "--signal=TERM@120",  # Lightning's SIGTERM handling, not submitit's SIGUSR2
    ):
        assert flag in flags, (flag, sorted(flags))
    assert not any(f.startswith("--partition") for f in flags)  # the cluster's default
    assert (tmp_path / "sweep").is_dir()

    # On CPU-only nodes: no GPUs asked for.
    cfg = make_cfg("train", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null")
    assert instantiate(cfg.hydra.launcher).params["gpus_per_node"] is None

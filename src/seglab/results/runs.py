"""Running the recipes for the results page: each run a separate ``src/train.py`` process
(so that its wall time includes start-up and evaluation, as a user sees it), and each run
folder read back into a record (metrics, time split, parameters, model)."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from seglab.checkpoints import load_checkpoint
from seglab.config import model_name
from seglab.reproduce.training import compose_train, quote

# Buffers that are not learned: left out of the parameter count.
_NOT_PARAMS = ("running_mean", "running_var", "num_batches_tracked")


def hardware() -> str:
    """The CPU model, the cores this process may use and the GPU, if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {cores} cores, {gpu}"


def param_count(state_dict: dict[str, Any]) -> int:
    """Learned numbers in a checkpoint's state dict (BatchNorm statistics left out)."""
    return sum(
        int(v.numel())
        for k, v in state_dict.items()
        if hasattr(v, "numel") and not k.endswith(_NOT_PARAMS)
    )


def _seconds(max_time: Any) -> float | None:
    """``trainer.max_time`` ("DD:HH:MM:SS" or a dict of timedelta keys) in seconds."""
    if max_time is None:
        return None
    if isinstance(max_time, str):
        d, h, m, s = (float(x) for x in max_time.split(":"))
        return ((d * 24 + h) * 60 + m) * 60 + s
    return float(
        sum(
            float(v) * {"days": 86400, "hours": 3600, "minutes": 60}.get(k, 1)
            for k, v in dict(max_time).items()
        )
    )


def _hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def budget_overrides(recipe: str, budget: float) -> list[str]:
    """The recipe's ``trainer.max_time`` and ``trainer.max_epochs`` scaled by ``budget``
    (none at 1.0: the recipe as written)."""
    if budget == 1.0:
        return []
    trainer = compose_train([f"experiment={recipe}"]).trainer
    out = []
    if trainer.get("max_epochs") is not None and trainer.max_epochs > 0:
        out.append(f"trainer.max_epochs={max(1, round(trainer.max_epochs * budget))}")
    max_time = trainer.get("max_time")  # only this key resolved (no run folder needed)
    if isinstance(max_time, DictConfig):
        max_time = OmegaConf.to_container(max_time)
    seconds = _seconds(max_time)
    if seconds is not None:
        out.append(f"trainer.max_time={quote(_hms(seconds * budget))}")
    return out


def override_value(value: Any) -> str:
    """A path as an override value: bare when it needs no quoting (readable commands)."""
    text = str(value)
    return text if re.fullmatch(r"[\w./+-]+", text) else quote(text)


def train_command(recipe: str, root: str | None, overrides: list[str]) -> list[str]:
    """``src/train.py``'s arguments for a recipe (``root``: its data, None for built-in)."""
    args = [f"experiment={recipe}"]
    if root is not None:
        args.append(f"data.root={override_value(root)}")
    return [*args, *overrides]


def read_run(run_dir: Path) -> dict[str, Any]:
    """What the results page shows of a finished run folder: val mIoU / aAcc / per-class IoU
    (metrics.json), the time split and curve (time_split.json, optional), the model's name
    and parameter count (its best checkpoint, else .hydra/config.yaml: no count)."""
    rec: dict[str, Any] = {"miou": None, "aacc": None, "iou": {}, "params": None, "model": "?"}
    path = run_dir / "metrics.json"
    if path.is_file():
        metrics = json.loads(path.read_text())
        rec["miou"] = metrics.get("val/miou")
        rec["aacc"] = metrics.get("val/aacc")
        rec["iou"] = {
            k[len("val/iou/") :]: v for k, v in metrics.items() if k.startswith("val/iou/")
        }
        ckpt_path = metrics.get("best_checkpoint")
        if ckpt_path and Path(ckpt_path).is_file():
            ckpt = load_checkpoint(ckpt_path)
            rec["model"] = model_name(ckpt["seglab_config"])
            rec["params"] = param_count(ckpt["state_dict"])
    saved = run_dir / ".hydra" / "config.yaml"
    if rec["model"] == "?" and saved.is_file():
        rec["model"] = model_name(OmegaConf.to_container(OmegaConf.load(saved)))
    split = run_dir / "time_split.json"
    rec["time_split"] = json.loads(split.read_text()) if split.is_file() else None
    return rec


def run_variant(repo: Path, args: list[str], run_dir: Path) -> dict[str, Any]:
    """Runs ``python src/train.py <args>`` from the repository root into ``run_dir`` (its
    output into ``run_dir/stdout.log``) and reads the folder back; ``wall_s`` is the
    process's wall time."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "src/train.py", *args, f"hydra.run.dir={override_value(run_dir)}"]
    start = time.perf_counter()
    with (run_dir / "stdout.log").open("w") as log:
        rc = subprocess.run(cmd, cwd=repo, stdout=log, stderr=subprocess.STDOUT).returncode
    rec: dict[str, Any] = {"wall_s": time.perf_counter() - start, "rc": rc}
    if rc != 0:
        tail = (run_dir / "stdout.log").read_text(errors="replace").strip().splitlines()[-3:]
        rec["error"] = f"exit status {rc}: " + " / ".join(tail)
    return {**read_run(run_dir), **rec}


def run_recipe(cfg: DictConfig, recipe: str, out: Path, repo: Path) -> dict[str, Any]:
    """Every variant of one recipe (or the reason it was skipped), as a record."""
    info = cfg.recipe_info[recipe]
    rec: dict[str, Any] = {
        "recipe": recipe,
        "dataset": info.dataset,
        "target": OmegaConf.to_container(info.target) if info.get("target") else None,
        "variants": {},
    }
    if not (repo / "conf" / "experiment" / f"{recipe}.yaml").is_file():
        rec["skipped"] = f"no recipe conf/experiment/{recipe}.yaml"
        return rec
    root = None
    if info.get("data"):
        root = Path(str(cfg.data_roots[info.data])).resolve()
        if not root.exists():
            rec["skipped"] = f"data not found at {root}"
            return rec
        root = os.path.relpath(root, repo)
    scaled = budget_overrides(recipe, float(cfg.budget))
    for variant in cfg.variants:
        args = train_command(recipe, root, [*cfg.variant_overrides[variant], *scaled])
        result = run_variant(repo, args, out / "runs" / recipe / variant)
        result["command"] = shlex.join(["python", "src/train.py", *args])
        rec["variants"][variant] = result
    rec["train_args"] = train_command(recipe, root, [])  # for the benchmark of the plain loop
    return rec

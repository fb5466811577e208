"""The plain-PyTorch-loop line of a time-to-accuracy plot, derived from the benchmark.

A hand-written loop of the same model makes the same updates (same data, same steps), so it
reaches the same accuracy after the same steps; only its step time differs. ``src/benchmark.py``
measures that difference for the recipe's own config (seglab's Lightning step against the
plain loop, interleaved rounds): ``train.ratio`` = seglab images/s / plain images/s. The plain
loop's curve is the recipe's curve with its training share of the time scaled by that ratio;
start-up, loading and evaluation are taken as equal. Derived, not run: the page says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from seglab.results.runs import override_value

PLAIN = "plain PyTorch loop (derived)"


def benchmark_ratio(repo: Path, args: list[str], bench: list[str], run_dir: Path) -> dict:
    """Runs ``python src/benchmark.py <args> <bench>`` into ``run_dir`` and returns its
    training figures (``ratio``, ``seglab_img_per_s``, ``plain_img_per_s``), or ``error``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "src/benchmark.py",
        *args,
        *bench,
        f"hydra.run.dir={override_value(run_dir)}",
    ]
    with (run_dir / "stdout.log").open("w") as log:
        rc = subprocess.run(cmd, cwd=repo, stdout=log, stderr=subprocess.STDOUT).returncode
    result = run_dir / "benchmark.json"
    if rc != 0 or not result.is_file():
        tail = (run_dir / "stdout.log").read_text(errors="replace").strip().splitlines()[-2:]
        return {"error": f"exit status {rc}: " + " / ".join(tail)}
    figures = json.loads(result.read_text())
    return {
        "ratio": figures["train.ratio"],
        "seglab_img_per_s": figures["train.seglab_img_per_s"],
        "plain_img_per_s": figures["train.plain_img_per_s"],
        "command": " ".join(["python", "src/benchmark.py", *args, *bench]),
    }


def plain_curve(run: dict[str, Any], ratio: float) -> list[list[float]]:
    """The recipe run's curve ([[elapsed_s, miou], ...]) as the plain loop would have drawn
    it: at each point the training share of the elapsed time (from the run's time split) is
    scaled by ``ratio``."""
    split = run.get("time_split") or {}
    wall, training = split.get("wall_s"), (split.get("parts") or {}).get("training")
    if not split.get("curve") or not wall or training is None:
        return []
    share = training / wall
    factor = 1 - share + share * ratio
    return [[t * factor, miou] for t, miou in split["curve"]]

"""Where a run came from: the code's git commit, the package versions, the machine and the
command. Saved as ``provenance.json`` in every run folder and in every checkpoint, so that a
result can be traced to the exact code and environment that produced it."""

from __future__ import annotations

import functools
import json
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

# The packages whose versions change results or checkpoints.
PACKAGES = (
    "seglab",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "hydra-core",
    "omegaconf",
    "albumentations",
    "opencv-python-headless",
    "numpy",
    "pillow",
    "timm",
    "onnx",
    "onnxruntime",
)


def _git(*args: str, cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state(path: Path | None = None) -> dict[str, Any] | None:
    """The commit of the git checkout holding the seglab code and whether it had uncommitted
    changes (``dirty``: the commit alone does not reproduce the run); None outside git."""
    cwd = path or Path(__file__).resolve().parent
    commit = _git("rev-parse", "HEAD", cwd=cwd)
    if not commit:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return {"commit": commit, "dirty": bool(status)}


def package_versions() -> dict[str, str]:
    """Installed versions of ``PACKAGES`` (those that are installed)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.cache
def _static() -> dict[str, Any]:
    return {
        "git": git_state(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def collect(seed: int | None = None) -> dict[str, Any]:
    """The provenance record of this process (plain types only: checkpoints stay loadable
    with ``torch.load(weights_only=True)``)."""
    return {**_static(), "seed": seed, "command": [sys.executable, *sys.argv]}


@rank_zero_only
def save(folder: str | Path, seed: int | None = None) -> Path:
    """Writes ``provenance.json`` into a run folder (rank 0 only)."""
    path = Path(folder) / "provenance.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(collect(seed), indent=2) + "\n")
    return path

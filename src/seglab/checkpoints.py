"""From a checkpoint file back to a built module: the one way eval, predict, export, the
instance task and the reproduction report restore a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seglab.checkpoint_io import safe_load
from seglab.moved_targets import upgrade_targets


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a seglab checkpoint safely (``weights_only=True``: no code runs on load; a file
    that would need more is refused with a ``ValueError``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass ckpt_path=<file.ckpt>")
    ckpt = safe_load(path)
    if "seglab_config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a seglab checkpoint (no seglab_config / state_dict)")
    ckpt["seglab_config"] = upgrade_targets(ckpt["seglab_config"])
    return ckpt

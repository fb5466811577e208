"""From a checkpoint file back to a built module: the one way eval, predict, export, the
instance task and the reproduction report restore a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from seglab.checkpoint_checks import check_checkpoint_fits
from seglab.checkpoint_io import safe_load
from seglab.config import plain
from seglab.errors import InputError, MissingFileError
from seglab.instantiators import build_module
from seglab.moved_targets import upgrade_saved_config
from seglab.task_module import TaskModule


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Loads a seglab checkpoint safely (``weights_only=True``: no code runs on load; a file
    that would need more is refused with a ``ValueError``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"checkpoint {path} does not exist; pass ckpt_path=<file.ckpt>")
    ckpt = safe_load(path)
    if "seglab_config" not in ckpt or "state_dict" not in ckpt:
        raise InputError(f"{path} is not a seglab checkpoint (no seglab_config / state_dict)")
    ckpt["seglab_config"] = upgrade_saved_config(ckpt["seglab_config"])
    return ckpt


def module_from_checkpoint(
    ckpt: dict[str, Any], run: DictConfig | None = None, *, path: Any = "the checkpoint"
) -> tuple[TaskModule, DictConfig]:
    """The module ``run`` describes (default: the checkpoint's own saved config) with the
    checkpoint's weights, and that config. A checkpoint whose tensors do not fit the built
    net is refused with a message naming both (``path`` names the file in it)."""
    if run is None:
        run = OmegaConf.create(ckpt["seglab_config"])
    module = build_module(run, from_checkpoint=True)
    check_checkpoint_fits(module.net, ckpt, path, plain(run), "evaluate")
    module.load_state_dict(ckpt["state_dict"])
    return module, run

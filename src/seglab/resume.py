"""Resuming by habit: ``ckpt_path=last`` and ``auto_resume=true``.

``ckpt_path=last`` (as Lightning users type it) takes the latest state of a run: its
``checkpoints/last.ckpt`` or, if newer, ``checkpoints/interrupted.ckpt`` (written on SIGTERM
or Ctrl+C). Which run: the one named by ``hydra.run.dir`` when that folder holds such a
checkpoint, else the newest one of the same ``task_name`` under the outputs folder
(``paths.log_dir``; a run folder of task ``train`` holds ``train.log``). ``auto_resume=true``
does the same when such a file exists and starts fresh otherwise: what a requeued
preemptible job wants. Either way the log says which file was taken.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, open_dict

from seglab.errors import MissingFileError

log = logging.getLogger(__name__)

LATEST_NAMES = ("last.ckpt", "interrupted.ckpt")


def latest_in_run(run_dir: Path) -> Path | None:
    """The newer of a run folder's ``last.ckpt`` and ``interrupted.ckpt``, or None."""
    found = [run_dir / "checkpoints" / n for n in LATEST_NAMES]
    found = [p for p in found if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def latest_of_task(log_dir: Path, task_name: str, exclude: Path | None = None) -> Path | None:
    """The newest ``last.ckpt`` / ``interrupted.ckpt`` of any run of ``task_name`` under
    ``log_dir`` (multirun job folders included), or None."""
    if not log_dir.is_dir():
        return None
    found = []
    for name in LATEST_NAMES:
        for path in log_dir.rglob(f"checkpoints/{name}"):
            run = path.parent.parent
            if run != exclude and (run / f"{task_name}.log").is_file():
                found.append(path)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def resolve_resume(cfg: DictConfig) -> None:
    """Replaces ``ckpt_path=last`` (or sets ``ckpt_path`` for ``auto_resume=true``) by the
    checkpoint file it means (see the module docstring)."""
    last = str(cfg.get("ckpt_path")) == "last"
    if not last and not (cfg.get("auto_resume") and not cfg.get("ckpt_path")):
        return
    run_dir = Path(cfg.paths.output_dir)
    log_dir, task = Path(cfg.paths.log_dir), str(cfg.get("task_name", "train"))
    found = latest_in_run(run_dir) or latest_of_task(log_dir, task, exclude=run_dir)
    if found is None:
        if last:
            raise MissingFileError(
                f"ckpt_path=last: no checkpoints/last.ckpt or interrupted.ckpt in {run_dir} "
                f"nor in any {task} run under {log_dir}; pass the file (ckpt_path=<run>/"
                "checkpoints/last.ckpt) or name the run (hydra.run.dir=<run folder>)"
            )
        log.info("auto_resume: no earlier checkpoint of a %s run found; starting fresh", task)
        return
    log.info("%s: resuming from %s", "ckpt_path=last" if last else "auto_resume", found)
    with open_dict(cfg):
        cfg.ckpt_path = str(found)

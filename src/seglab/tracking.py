"""MLflow and Weights & Biases runs (``logger=mlflow``, ``logger=wandb``; conf/logger/), built
on Lightning's own loggers, with what those leave out: a clear message when the package is
missing, MLflow's local file store allowed, runs named after their run folders, and the
run's files (metrics.json, the resolved config) stored with the run at the end.

The packages are the optional ``trackers`` extra (``make install`` installs it); this module
only looks them up (``find_spec``), so seglab imports without them. See docs/tracking.md.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from seglab.errors import SeglabError

# What pip installs for each tracker: mlflow-skinny is MLflow's client without its server,
# UI and ML libraries (pandas, scikit-learn, ...), all a run needs to write a local store.
PACKAGES = {"mlflow": "mlflow-skinny", "wandb": "wandb"}


def _require(module: str) -> None:
    """One line that says what to install, instead of a traceback from inside Hydra (Lightning
    would suggest the full ``mlflow``, ~10x the download of mlflow-skinny)."""
    if find_spec(module) is None:
        raise SeglabError(
            f"logger={module} needs the {module} package: pip install -e '.[trackers]' "
            f"(or pip install {PACKAGES[module]})"
        )


def run_name(run_dir: str, log_dir: str) -> str:
    """The run folder relative to ``paths.log_dir`` (``2025-01-31/12-00-00-000000_123``,
    ``multirun/.../0``), else its last part: the tracker's name of a run leads to its folder."""
    run, root = Path(run_dir).resolve(), Path(log_dir).resolve()
    return run.relative_to(root).as_posix() if run.is_relative_to(root) else run.name


def mlflow_logger(**kwargs: Any) -> MLFlowLogger:
    """Lightning's ``MLFlowLogger`` with ``kwargs``. MLflow 3 refuses its file store
    (``file:`` URIs, "maintenance mode") unless ``MLFLOW_ALLOW_FILE_STORE`` is set; the
    default config writes one (no database, no server), so it is allowed here unless the
    environment says otherwise."""
    _require("mlflow")
    uri = kwargs.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri or uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(**kwargs)


def wandb_logger(**kwargs: Any) -> WandbLogger:
    """Lightning's ``WandbLogger`` with ``kwargs``, or the message saying what to install."""
    _require("wandb")
    return WandbLogger(**kwargs)


@rank_zero_only
def log_artifacts(loggers: Iterable[Logger], files: Sequence[Path | str]) -> None:
    """Stores a finished run's ``files`` with its MLflow and W&B runs, at their paths relative
    to the files' common folder (``.hydra/config.yaml`` stays one); files that do not exist
    are skipped, other loggers left alone. Then ends the W&B run: Lightning never does, and
    the next ``WandbLogger`` in this process (a sweep's next run) would log into it.
    Call it last: a W&B logger takes nothing after it."""
    paths = [Path(f).resolve() for f in files if Path(f).is_file()]
    base = Path(os.path.commonpath([p.parent for p in paths])) if paths else Path()
    for lg in loggers:
        if isinstance(lg, MLFlowLogger):
            for path in paths:
                folder = path.parent.relative_to(base).as_posix()
                lg.experiment.log_artifact(
                    lg.run_id, str(path), artifact_path=None if folder == "." else folder
                )
        elif isinstance(lg, WandbLogger):
            run = lg.experiment
            for path in paths:
                # Copied, not linked (run.save links): an offline run folder moved to
                # another machine for `wandb sync` keeps its files.
                dest = Path(run.dir) / path.relative_to(base)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
                run.save(str(dest), base_path=run.dir, policy="now")
            run.finish()

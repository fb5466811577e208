"""Where a run's wall time goes: start-up, waiting for batches, training steps, evaluation,
checkpoint writes and the rest, written to ``<run>/time_split.json``.

``TimeSplit`` keeps one clock cursor and one current part: each hook (and each checkpoint
write) charges the time since the cursor to the part that was running, then switches part.
The parts therefore partition the time from the process start to the moment of writing, and
"other" (logging, callbacks, Lightning's own set-up between stages) is what no hook claimed.
It stays attached to the trainer through ``trainer.validate`` / ``trainer.test`` after fit,
so the final evaluation is counted too; the file is rewritten at every teardown.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L

try:  # only a fallback: /proc is read first
    import psutil
except ImportError:  # pragma: no cover - psutil is optional
    psutil = None

log = logging.getLogger(__name__)

# When this module was imported: the process start's last resort (no /proc, no psutil).
_IMPORTED_AT = time.time()
# When the last TimeSplit of this process wrote its file (Unix time): the next run in the
# same process (a Hydra multirun's 2nd and later jobs) starts its clock there, not at the
# process start, so its wall time is its own.
_LAST_WRITTEN: float | None = None

PARTS = ("startup", "loading", "training", "evaluation", "checkpoints", "other")


def process_start_time() -> float:
    """When this process started, as a Unix time: from ``/proc/self/stat`` (clock ticks since
    boot) and ``/proc/uptime``, else psutil, else this module's import time."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    if psutil is not None:
        try:
            return float(psutil.Process().create_time())
        except Exception:  # noqa: BLE001 - any failure falls back to the import time
            pass
    return _IMPORTED_AT


class TimeSplit(L.Callback):
    """Measures the share of wall time in each part of a run (see the module docstring).

    ``dirpath``: where ``time_split.json`` goes (default: the trainer's ``default_root_dir``).
    ``start``: the Unix time that counts as the run's start (default: the process start read
    from the OS, or when the previous run in this process wrote its file); tests pass their
    own start so that pytest's start-up is not counted."""

    def __init__(self, dirpath: str | None = None, start: float | None = None) -> None:
        self.dirpath = dirpath
        if start is not None:
            start_unix = float(start)
        else:
            start_unix = _LAST_WRITTEN if _LAST_WRITTEN is not None else process_start_time()
        # perf_counter is monotonic: the start is mapped onto it once.
        self._start = time.perf_counter() - (time.time() - start_unix)
        self._cursor = self._start
        self._part = "startup"
        self._started = False  # start-up ends with the first fit / validate / test
        self.parts = dict.fromkeys(PARTS, 0.0)
        self.curve: list[list[float]] = []

    # The clock: charge the time since the cursor to the running part, then switch.
    def _charge(self, then: str | None = None) -> float:
        now = time.perf_counter()
        self.parts[self._part] += now - self._cursor
        self._cursor = now
        if then is not None:
            self._part = then
        return now

    def _begin_stage(self) -> None:
        self._charge()
        if not self._started:
            self._started = True
            self._part = "other"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._wrap_checkpoint_io(trainer)

    def _wrap_checkpoint_io(self, trainer: L.Trainer) -> None:
        """Times the plugin's ``save_checkpoint`` itself (the write, not the hooks around it):
        the instance's method is replaced by a timing wrapper, once per plugin."""
        io = trainer.strategy.checkpoint_io
        save = io.save_checkpoint
        if getattr(save, "_time_split", None) is self:
            return

        def timed_save(*args: Any, **kwargs: Any) -> Any:
            before = self._part
            self._charge("checkpoints")
            try:
                return save(*args, **kwargs)
            finally:
                self._charge(before)

        timed_save._time_split = self  # type: ignore[attr-defined]
        io.save_checkpoint = timed_save  # type: ignore[method-assign]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin_stage()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin_stage()

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin_stage()

    # Training: epoch start / batch end -> batch start is loading, batch start -> end a step.
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._charge("loading")

    def on_train_batch_start(self, *args: Any) -> None:
        self._charge("training")

    def on_train_batch_end(self, *args: Any) -> None:
        self._charge("loading")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._charge("other")

    # Evaluation: the same, and the module's epoch-end metrics (after the callbacks' epoch
    # end hooks, before on_*_end) count as evaluation.
    def _eval_epoch_end(self) -> None:
        self._charge("evaluation")

    def _eval_end(self) -> None:
        self._charge("other")

    def on_validation_epoch_start(self, *args: Any) -> None:
        self._charge("loading")

    def on_validation_batch_start(self, *args: Any) -> None:
        self._charge("evaluation")

    def on_validation_batch_end(self, *args: Any) -> None:
        self._charge("loading")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_epoch_end()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_end()
        miou = trainer.callback_metrics.get("val/miou")
        if trainer.state.fn == "fit" and not trainer.sanity_checking and miou is not None:
            self.curve.append([round(self._cursor - self._start, 3), float(miou)])

    def on_test_epoch_start(self, *args: Any) -> None:
        self._charge("loading")

    def on_test_batch_start(self, *args: Any) -> None:
        self._charge("evaluation")

    def on_test_batch_end(self, *args: Any) -> None:
        self._charge("loading")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_epoch_end()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_end()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._charge("other")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._charge("other")
        if trainer.is_global_zero:
            stage = str(getattr(stage, "value", stage))  # Lightning passes a TrainerFn
            self.write(Path(self.dirpath or trainer.default_root_dir), stage)

    def summary(self) -> dict[str, Any]:
        """The ``time_split.json`` contents now: "other" is the wall time less the other parts
        (what the running part has taken since the last hook included)."""
        now = self._charge()
        wall = now - self._start
        parts = {k: round(v, 3) for k, v in self.parts.items() if k != "other"}
        parts["other"] = round(wall - sum(parts.values()), 3)
        return {"wall_s": round(wall, 3), "parts": parts, "curve": [*self.curve]}

    def write(self, folder: Path, stage: str = "") -> Path:
        """Writes ``folder / time_split.json`` and logs the shares in one line."""
        global _LAST_WRITTEN
        data = self.summary()
        _LAST_WRITTEN = time.time()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "time_split.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        log.info("where the time went%s: %s", f" (after {stage})" if stage else "", shares(data))
        return path


def shares(data: dict[str, Any]) -> str:
    """``"startup 12 %, loading 3 %, ... of 8.1 s"`` for a ``time_split.json``'s contents."""
    wall = data["wall_s"] or 1.0
    text = ", ".join(f"{k} {100 * v / wall:.0f} %" for k, v in data["parts"].items())
    return f"{text} of {data['wall_s']:.1f} s"

"""A callback for the interrupt tests, loaded by the training subprocess (``tests`` is on its
``PYTHONPATH``): rank 0 signals itself once, from inside a chosen hook, so the signal lands
at an exact point (mid-validation, mid-checkpoint-save) instead of wherever ``kill`` hits."""

from __future__ import annotations

import os
import signal

import lightning as L


class SignalAt(L.Callback):
    def __init__(self, hook: str, signum: str = "SIGTERM", epoch: int = 1) -> None:
        self.hook, self.signum, self.epoch, self.sent = hook, signal.Signals[signum], epoch, False

    def _maybe_send(self, trainer: L.Trainer, hook: str) -> None:
        if (
            hook == self.hook
            and not self.sent
            and trainer.is_global_zero
            and not trainer.sanity_checking
            and trainer.current_epoch >= self.epoch
        ):
            self.sent = True
            os.kill(os.getpid(), self.signum)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._maybe_send(trainer, "on_validation_batch_start")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._maybe_send(trainer, "on_save_checkpoint")

"""seglab's training step against the loop anyone would write by hand, on one fixed batch.

The two loops run in alternating rounds (ABBA), so a shared machine's drifting speed hits both
alike; the ratio is taken round by round and summarised by its geometric median.
"""

from __future__ import annotations

import math
import statistics
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig

from seglab.benchmark.memory import measure
from seglab.benchmark.timing import default_device, median_spread, sync
from seglab.config import build
from seglab.instantiators import build_module, instantiate_all, run_callbacks
from seglab.module import autocast, split_output
from seglab.optim import param_groups, scale_group_lrs


class _StepTimes(Callback):
    """A clock read after every training step (the device waited for)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.stamps = device, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(self.device)
        self.stamps.append(time.perf_counter())


class _SameBatch(torch.utils.data.Dataset):
    """The one benchmark batch, ``n`` times (DataLoader with ``batch_size=None``)."""

    def __init__(self, batch: dict[str, torch.Tensor], n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batch


def train_seglab(cfg: DictConfig, batch: dict, steps: int) -> list[float]:
    """seglab's training as ``train.py`` runs it: the module through a Trainer with the run's
    callbacks (progress bar, learning-rate monitor, interrupt checkpoint, ...) and loggers.
    Only the epoch-end checkpoint is left out: it is written after the last timed step."""
    L.seed_everything(0, workers=False, verbose=False)
    module = build_module(cfg)
    timer = _StepTimes(default_device())
    callbacks = [c for c in run_callbacks(cfg) if not isinstance(c, ModelCheckpoint)]
    trainer = build(
        cfg.trainer,
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=instantiate_all(cfg.get("logger")) or False,
        callbacks=[*callbacks, timer],
        enable_checkpointing=False,
        default_root_dir=cfg.paths.output_dir,
    )
    loader = torch.utils.data.DataLoader(_SameBatch(batch, steps), batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    return [b - a for a, b in zip(timer.stamps, timer.stamps[1:], strict=False)]


def train_plain(cfg: DictConfig, batch: dict, steps: int) -> list[float]:
    """The reference: the loop anyone would write by hand for the same training."""
    L.seed_everything(0, workers=False, verbose=False)
    module = build_module(cfg)
    net, loss_fn = module.net, module.loss
    device = default_device()
    net.to(device).train()  # a frozen encoder stays in eval mode (SegmentationNet.train)
    fmt = torch.channels_last if module.channels_last else torch.contiguous_format
    optimizer = scale_group_lrs(module.optimizer_factory(param_groups(net, module.lr_mult)))
    schedule = module.scheduler_factory
    scheduler = schedule(optimizer, total_steps=steps) if schedule is not None else None
    precision = str(cfg.trainer.get("precision", "32-true"))
    scaler = torch.amp.GradScaler(enabled=precision.startswith("16") and device.type == "cuda")
    stamps = []
    for _ in range(steps):
        # As a loader's batch would: moved and converted to the memory format every step.
        x = batch["image"].to(device).contiguous(memory_format=fmt)
        y = batch["mask"].to(device)
        with autocast(precision, device):
            logits, aux = split_output(net(x))
            loss = loss_fn(logits, y)
            if aux is not None and module.aux_weight:
                aux = torch.nn.functional.interpolate(aux, size=y.shape[-2:], mode="bilinear")
                loss = loss + module.aux_weight * loss_fn(aux, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        sync(device)
        stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def interleaved_training(
    cfg: DictConfig, batch: dict, warmup: int, steps: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Both training loops for ``rounds`` rounds in ABBA order (seglab first in even rounds,
    the plain loop first in odd ones), each phase warmed up and timed on its own. Returns,
    per loop, the median images/s over rounds, their spread and the median peak memory, and
    the median, min and max of the per-round ratio seglab / plain."""
    n = batch["image"].shape[0]
    loops = {"seglab": train_seglab, "plain": train_plain}
    rates: dict[str, list[float]] = {"seglab": [], "plain": []}
    peaks: dict[str, list[float]] = {"seglab": [], "plain": []}
    for r in range(rounds):
        for name in ("seglab", "plain") if r % 2 == 0 else ("plain", "seglab"):
            times, peak = measure(loops[name], cfg, batch, steps)
            timed = times[warmup:]
            rates[name].append(n * len(timed) / sum(timed))
            peaks[name].append(peak)
    out = {
        name: median_spread(rates[name]) | {"peak_mb": statistics.median(peaks[name])}
        for name in loops
    }
    pairs = list(zip(rates["seglab"], rates["plain"], strict=True))
    ratios = [a / b for a, b in pairs]
    # The median in log space: ratios r and 1/r (an order effect ABBA cancels) give 1.
    median = math.exp(statistics.median(math.log(r) for r in ratios))
    out["ratio"] = {"median": median, "min": min(ratios), "max": max(ratios)}
    # What seglab adds to each step, in ms: the number that stays put across models.
    out["overhead_ms"] = {"median": statistics.median(1e3 * n * (1 / a - 1 / b) for a, b in pairs)}
    return out

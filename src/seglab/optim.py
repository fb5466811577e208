"""Learning-rate schedules stepped per iteration, and parameter groups.

Schedules are built as ``scheduler(optimizer, total_steps=...)`` by ``SegmentationModule``,
which knows the number of optimizer steps only once the trainer is set up; the config
gives everything else (``conf/scheduler/``).
"""

from __future__ import annotations

import math

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from seglab.errors import InputError


class WarmupDecayLR(LambdaLR):
    """A linear warmup from ``warmup_ratio * base_lr`` over ``warmup_steps``, then
    ``decay(t)`` (``t`` from 0 to 1 over the remaining steps) down to ``min_lr_ratio``.
    Subclasses give the decay's shape."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_ratio: float = 0.1,
        min_lr_ratio: float = 0.0,
    ) -> None:
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.warmup_ratio, self.min_lr_ratio = warmup_ratio, min_lr_ratio
        super().__init__(optimizer, self.factor)

    def shape(self, t: float) -> float:
        """From 1 at ``t = 0`` to 0 at ``t = 1``."""
        raise NotImplementedError

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_ratio + (1 - self.warmup_ratio) * step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * self.shape(min(1.0, progress))


class PolyLR(WarmupDecayLR):
    """lr = base_lr * (1 - t)^power after an optional linear warmup (DeepLab's 'poly')."""

    def __init__(
        self, optimizer: Optimizer, total_steps: int, power: float = 0.9, **warmup
    ) -> None:
        self.power = power  # read by the first step, inside LambdaLR's constructor
        super().__init__(optimizer, total_steps, **warmup)

    def shape(self, t: float) -> float:
        return (1 - t) ** self.power


class CosineLR(WarmupDecayLR):
    """Cosine decay to ``min_lr_ratio * base_lr`` after an optional linear warmup."""

    def shape(self, t: float) -> float:
        return 0.5 * (1 + math.cos(math.pi * t))


def param_groups(net: nn.Module, lr_mult: dict[str, float] | None) -> list[dict]:
    """Splits trainable parameters by name prefix, e.g. ``{"encoder": 0.1}`` trains the
    encoder at a tenth of the base learning rate; parameters matching no prefix use 1.0.
    Each group carries ``lr_mult``; ``scale_group_lrs`` applies it once the optimizer exists."""
    lr_mult = dict(lr_mult or {})
    groups: dict[str, list] = {prefix: [] for prefix in lr_mult}
    groups["_rest"] = []
    matched: set[str] = set()  # a frozen part (train_trunk=false) is named, just not trained
    for name, p in net.named_parameters():
        prefix = next((k for k in lr_mult if name == k or name.startswith(k + ".")), "_rest")
        matched.add(prefix)
        if p.requires_grad:
            groups[prefix].append(p)
    unknown = [k for k in lr_mult if k not in matched]
    if unknown:
        raise InputError(
            f"model.lr_mult names {unknown}, which match no parameter of "
            f"{type(net).__name__}; its top-level parts are "
            f"{[n for n, _ in net.named_children()]}"
        )
    mult = {**lr_mult, "_rest": 1.0}
    return [
        {"params": ps, "lr_mult": mult[k], "name": k.lstrip("_")} for k, ps in groups.items() if ps
    ]


def scale_group_lrs(optimizer: Optimizer) -> Optimizer:
    for group in optimizer.param_groups:
        group["lr"] *= group.get("lr_mult", 1.0)
    return optimizer

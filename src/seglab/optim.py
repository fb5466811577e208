"""Learning-rate schedules stepped per iteration, and parameter groups.

Schedules are built as ``scheduler(optimizer, total_steps=...)`` by ``SegmentationModule``,
which knows the number of optimizer steps only once the trainer is set up; the config
gives everything else (``conf/scheduler/``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _with_warmup(
    decay: Callable[[float], float], total_steps: int, warmup_steps: int, warmup_ratio: float
) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_ratio + (1 - warmup_ratio) * step / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return decay(min(1.0, progress))

    return factor


class PolyLR(LambdaLR):
    """lr = base_lr * (1 - t)^power after an optional linear warmup (DeepLab's 'poly')."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        power: float = 0.9,
        warmup_steps: int = 0,
        warmup_ratio: float = 0.1,
        min_lr_ratio: float = 0.0,
    ) -> None:
        def decay(t: float) -> float:
            return min_lr_ratio + (1 - min_lr_ratio) * (1 - t) ** power

        super().__init__(optimizer, _with_warmup(decay, total_steps, warmup_steps, warmup_ratio))


class CosineLR(LambdaLR):
    """Cosine decay to ``min_lr_ratio * base_lr`` after an optional linear warmup."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        warmup_ratio: float = 0.1,
        min_lr_ratio: float = 0.0,
    ) -> None:
        def decay(t: float) -> float:
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

        super().__init__(optimizer, _with_warmup(decay, total_steps, warmup_steps, warmup_ratio))


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
        raise ValueError(
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

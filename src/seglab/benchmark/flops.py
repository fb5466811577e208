"""Counting a net's forward FLOPs (torch's own counter), for the benchmark and the report."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def flops_per_image(net: torch.nn.Module, in_channels: int, size: int | list[int]) -> float:
    """Forward FLOPs (a multiply-add counts 2) of one image of ``size`` (side or [h, w])."""
    h, w = (size, size) if isinstance(size, int) else size
    was_training = net.training
    net.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, in_channels, h, w))
    net.train(was_training)
    return float(counter.get_total_flops())

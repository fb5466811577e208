"""Small building blocks shared by the architectures."""

from __future__ import annotations

import torch
from torch import nn


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, batch_norm: bool = True) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=not batch_norm),
            nn.BatchNorm2d(cout) if batch_norm else nn.Identity(),
            nn.ReLU(inplace=True),
        )


class Float32Conv2d(nn.Conv2d):
    """A convolution that always runs in float32, also under autocast.

    For class-score layers on very wide features: with torch 2.14.1 on CPU, the bf16
    backward of a 1x1 convolution with 2560 or more input and few output channels (FCN's
    4096 -> num_classes scorer) corrupts the heap and crashes the process. A scorer is cheap,
    and full precision there also keeps the logits exact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def replace_first_conv(module: nn.Module, in_channels: int) -> None:
    """Swaps the first convolution for one taking ``in_channels`` inputs (same geometry)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            setattr(
                module,
                name,
                nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    child.bias is not None,
                ),
            )
            return
        if any(isinstance(m, nn.Conv2d) for m in child.modules()):
            replace_first_conv(child, in_channels)
            return

"""Small building blocks shared by the architectures."""

from __future__ import annotations

from torch import nn


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, batch_norm: bool = True) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=not batch_norm),
            nn.BatchNorm2d(cout) if batch_norm else nn.Identity(),
            nn.ReLU(inplace=True),
        )

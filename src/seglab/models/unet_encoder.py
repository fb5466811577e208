"""U-Net's own contracting path (Ronneberger et al., 2015), the table's ``unet`` encoder.

``depth`` 2x downsamplings (max pooling, ceil mode: odd sizes keep their last row/column),
each followed by two 3x3 convolutions ('same' padding, optional BatchNorm, ReLU); the widths
are ``base_channels * 2**level``. It returns the feature map of every level, finest first
(strides 1 to ``2**depth``). It has no pretrained weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import InputError
from seglab.models.base import Encoder
from seglab.models.common import ConvBNReLU


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, batch_norm: bool) -> None:
        super().__init__(
            ConvBNReLU(cin, cout, 3, batch_norm), ConvBNReLU(cout, cout, 3, batch_norm)
        )


class UNetEncoder(Encoder):
    def __init__(
        self, in_channels: int = 3, depth: int = 4, base_channels: int = 64, batch_norm: bool = True
    ) -> None:
        super().__init__()
        if depth < 1:
            raise InputError(f"unet: depth must be >= 1, got {depth}")
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, widths[0], batch_norm)
        self.downs = nn.ModuleList(
            DoubleConv(cin, cout, batch_norm)
            for cin, cout in zip(widths[:-1], widths[1:], strict=True)
        )
        self.channels = tuple(widths)
        self.strides = tuple(2**i for i in range(depth + 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(x)]
        for down in self.downs:
            features.append(down(F.max_pool2d(features[-1], 2, ceil_mode=True)))
        return features

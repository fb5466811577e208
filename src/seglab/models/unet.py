"""U-Net (Ronneberger et al., 2015) with configurable depth and width.

Differences from the paper, as in most modern re-implementations: 'same' padding (so the
output has the input's size and no tiling is needed) and optional BatchNorm. Any input size
works without padding the input: pooling uses ceil mode and each upsampled map is cropped to
its skip connection's size, so an image that is not a multiple of 16 sees no artificial
border that training crops never showed. ``depth`` is the
number of 2x downsamplings; the widths are ``base_channels * 2**level``. ``depth=4,
base_channels=64, batch_norm=False, upsampling="transpose"`` is the paper's network (31.0M
parameters at 2 classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.common import ConvBNReLU


class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, batch_norm: bool) -> None:
        super().__init__(
            ConvBNReLU(cin, cout, 3, batch_norm), ConvBNReLU(cout, cout, 3, batch_norm)
        )


class UNetEncoder(nn.Module):
    """The contracting path; returns the feature map of every level (finest first)."""

    def __init__(self, in_channels: int, widths: list[int], batch_norm: bool) -> None:
        super().__init__()
        self.stem = DoubleConv(in_channels, widths[0], batch_norm)
        self.downs = nn.ModuleList(
            DoubleConv(cin, cout, batch_norm)
            for cin, cout in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(x)]
        for down in self.downs:
            # ceil_mode: odd sizes keep their last row/column instead of dropping it.
            features.append(down(F.max_pool2d(features[-1], 2, ceil_mode=True)))
        return features


class UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, upsampling: str, batch_norm: bool) -> None:
        super().__init__()
        if upsampling == "transpose":
            self.up = nn.ConvTranspose2d(cin, cskip, kernel_size=2, stride=2)
        elif upsampling == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(cin, cskip, kernel_size=1),
            )
        else:
            raise ValueError(
                f"unet: upsampling must be 'transpose' or 'bilinear', got {upsampling!r}"
            )
        self.conv = DoubleConv(2 * cskip, cout, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # With ceil-mode pooling the upsampled map is at most one pixel larger: crop it.
        x = self.up(x)[..., : skip.shape[-2], : skip.shape[-1]]
        return self.conv(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 4,
        base_channels: int = 64,
        upsampling: str = "transpose",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"unet: depth must be >= 1, got {depth}")
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.encoder = UNetEncoder(in_channels, widths, batch_norm)
        self.decoder = nn.ModuleList(
            UpBlock(cin, cout, cout, upsampling, batch_norm)
            for cin, cout in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, y = self.encoder(x)
        for up, skip in zip(self.decoder, reversed(skips), strict=True):
            y = up(y, skip)
        return self.head(y)

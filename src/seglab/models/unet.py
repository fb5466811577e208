"""U-Net (Ronneberger et al., 2015) with configurable depth and width, on any encoder.

Differences from the paper, as in most modern re-implementations: 'same' padding (so the
output has the input's size and no tiling is needed) and optional BatchNorm. Any input size
works without padding the input: pooling uses ceil mode and each upsampled map is cropped to
its skip connection's size, so an image that is not a multiple of 16 sees no artificial
border that training crops never showed. With its own contracting path (``encoder="unet"``,
``seglab.models.unet_encoder``), ``depth`` is the number of 2x downsamplings and the widths
are ``base_channels * 2**level``. ``depth=4, base_channels=64, batch_norm=False,
upsampling="transpose"`` is the paper's network (31.0M parameters at 2 classes).

``encoder`` takes any name of the encoder table (``seglab.models.encoders``): every feature
map but the last is a skip. ``encoder="efficientnet_lite0"`` puts the decoder on an
ImageNet-pretrained EfficientNet-Lite0: skips at strides 2 / 4 / 8 / 16 (16 / 24 / 40 / 112
channels), 320 channels at stride 32, ``decoder_channels`` (128, 64, 64, 64) by default; logits
from a first skip at stride 2 are upsampled bilinearly to the input (3.74M parameters at 5
classes). ``depth`` and ``base_channels`` shape the contracting path and must stay at their
defaults (4, 64) with another encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import InputError
from seglab.models.base import EncoderDecoder
from seglab.models.encoders import get_encoder, net_options
from seglab.models.unet_encoder import DoubleConv

# Decoder widths (deepest first) tuned for an encoder; any other: its skip widths mirrored.
DECODER_CHANNELS = {"efficientnet_lite0": (128, 64, 64, 64)}


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
            raise InputError(
                f"unet: upsampling must be 'transpose' or 'bilinear', got {upsampling!r}"
            )
        self.conv = DoubleConv(2 * cskip, cout, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # With ceil-mode pooling the upsampled map is at most one pixel larger: crop it.
        x = self.up(x)[..., : skip.shape[-2], : skip.shape[-1]]
        return self.conv(torch.cat([x, skip], dim=1))


class UNet(EncoderDecoder):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 4,
        base_channels: int = 64,
        upsampling: str = "transpose",
        batch_norm: bool = True,
        encoder: str = "unet",
        decoder_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        options = {"depth": depth, "base_channels": base_channels, "batch_norm": batch_norm}
        fixed = {"depth": 4, "base_channels": 64}
        self.encoder = get_encoder(
            encoder, in_channels, **net_options("unet", encoder, options, fixed)
        )
        channels = self.encoder.channels
        widths = list(decoder_channels or DECODER_CHANNELS.get(encoder, channels[-2::-1]))
        if len(widths) != len(channels) - 1:
            raise InputError(
                f"unet: decoder_channels needs {len(channels) - 1} widths (one per skip, "
                f"deepest first), got {widths}"
            )
        blocks, cin = [], channels[-1]
        for cskip, cout in zip(channels[-2::-1], widths, strict=True):
            blocks.append(UpBlock(cin, cskip, cout, upsampling, batch_norm))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, y = self.encoder(x)
        for up, skip in zip(self.decoder, reversed(skips), strict=True):
            y = up(y, skip)
        y = self.head(y)
        if y.shape[-2:] != x.shape[-2:]:  # an encoder whose first skip is at stride 2
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y

"""U-Net (Ronneberger et al., 2015) with configurable depth and width.

Differences from the paper, as in most modern re-implementations: 'same' padding (so the
output has the input's size and no tiling is needed) and optional BatchNorm. Any input size
works without padding the input: pooling uses ceil mode and each upsampled map is cropped to
its skip connection's size, so an image that is not a multiple of 16 sees no artificial
border that training crops never showed. ``depth`` is the
number of 2x downsamplings; the widths are ``base_channels * 2**level``. ``depth=4,
base_channels=64, batch_norm=False, upsampling="transpose"`` is the paper's network (31.0M
parameters at 2 classes).

``encoder="efficientnet_lite0"`` puts the decoder on an ImageNet-pretrained EfficientNet-Lite0
instead of the contracting path (``seglab.models.efficientnet``): skips at strides 2 / 4 / 8 /
16 (16 / 24 / 40 / 112 channels), 320 channels at stride 32, ``decoder_channels`` (128, 64, 64,
64) by default; the stride-2 logits are upsampled bilinearly to the input (3.74M parameters at
5 classes). ``depth`` and ``base_channels`` shape the contracting path and must stay at their
defaults (4, 64) with another encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models import efficientnet
from seglab.models.common import ConvBNReLU

ENCODERS = ("unet", efficientnet.NAME)


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
        encoder: str = "unet",
        decoder_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.default_weights: str | None = None  # ImageNet weights: none for U-Net's own encoder
        if encoder == "unet":
            if depth < 1:
                raise ValueError(f"unet: depth must be >= 1, got {depth}")
            channels = [base_channels * 2**i for i in range(depth + 1)]
            self.encoder = UNetEncoder(in_channels, channels, batch_norm)
            widths = channels[-2::-1]
        elif encoder == efficientnet.NAME:
            if (depth, base_channels) != (4, 64):
                raise ValueError(
                    f"unet: depth={depth} / base_channels={base_channels} shape U-Net's own "
                    f"encoder, not {encoder}: leave them at 4 / 64 (or use model=unet)"
                )
            channels = list(efficientnet.CHANNELS)
            self.encoder = efficientnet.efficientnet_lite0(in_channels)
            self.compile_dynamic = efficientnet.COMPILE_DYNAMIC
            self.default_weights = efficientnet.WEIGHTS
            widths = [128, 64, 64, 64]
        else:
            raise ValueError(f"unet: model.encoder={encoder!r}; use one of {ENCODERS}")
        widths = list(decoder_channels or widths)
        if len(widths) != len(channels) - 1:
            raise ValueError(
                f"unet: decoder_channels needs {len(channels) - 1} widths (one per skip, "
                f"deepest first), got {widths}"
            )
        blocks, cin = [], channels[-1]
        for cskip, cout in zip(channels[-2::-1], widths, strict=True):
            blocks.append(UpBlock(cin, cskip, cout, upsampling, batch_norm))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, num_classes, kernel_size=1)

    def load_encoder_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """ImageNet weights of the EfficientNet-Lite0 encoder (the plain U-Net has none:
        ``default_weights`` is None)."""
        efficientnet.load_efficientnet_weights(self.encoder, state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, y = self.encoder(x)
        for up, skip in zip(self.decoder, reversed(skips), strict=True):
            y = up(y, skip)
        y = self.head(y)
        if y.shape[-2:] != x.shape[-2:]:  # an encoder whose first skip is at stride 2
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y

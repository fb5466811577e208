"""DeepLabV3+ (Chen et al., 2018): a dilated encoder (ResNet-50 by default), ASPP and a
light decoder.

``aspp`` (atrous spatial pyramid pooling) runs five parallel branches on the final features
(1x1 conv; three 3x3 convs with growing dilation; image pooling), each 256 channels with BN and
ReLU, and projects their concatenation back to 256 (1x1, BN, ReLU, dropout 0.1 as in the
reference TensorFlow code). ``decoder`` recovers boundaries DeepLabV3 blurs: the stride-4
features (ResNet: layer1's), reduced to 48 channels so they do not outweigh the semantics,
are concatenated with the upsampled ASPP output and refined by two 3x3 convs (256) before
the 1x1 classifier.

The dilation rates scale with the output stride: (6, 12, 18) at 16 and (12, 24, 36) at 8,
unless ``aspp_rates`` says otherwise (the seed project trained with ``[4, 8, 14]``). The three
parts are ``encoder`` / ``aspp`` / ``decoder``, so ``model.lr_mult`` can train each at its own
rate as the seed did.

Bilinear upsampling to the low-level map's and then the input's exact size makes any input
size work. BatchNorm in the image-pooling branch sees one value per channel and image, so
training needs a batch of at least 2 (eval mode is fine with 1).

``encoder`` takes any name of the encoder table (``seglab.models.encoders``), dilated to
``output_stride`` where it can be. ``encoder="efficientnet_lite0"`` runs ASPP on an
ImageNet-pretrained EfficientNet-Lite0's 320-channel features instead (the last strided stage
dilated for output stride 16 or 8) and the decoder on its stride-4 features (24 channels):
6.96M parameters at 5 classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import InputError
from seglab.models.base import EncoderDecoder
from seglab.models.common import ConvBNReLU
from seglab.models.encoders import dilated_encoder

DEFAULT_RATES = {16: (6, 12, 18), 8: (12, 24, 36), 32: (3, 6, 9)}
LOW_LEVEL_STRIDE = 4  # the decoder's low-level features


class AtrousConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class ImagePooling(nn.Module):
    """Global context: the image's average feature, projected and spread over the map."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvBNReLU(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x)).expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    def __init__(
        self, in_channels: int, rates: Sequence[int], channels: int = 256, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [
                ConvBNReLU(in_channels, channels, 1),
                *(AtrousConvBNReLU(in_channels, channels, int(r)) for r in rates),
                ImagePooling(in_channels, channels),
            ]
        )
        self.project = nn.Sequential(
            ConvBNReLU(channels * len(self.branches), channels, 1), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class Decoder(nn.Module):
    """Fuses the ASPP output with projected low-level features; returns stride-4 logits."""

    def __init__(
        self,
        low_channels: int,
        aspp_channels: int,
        num_classes: int,
        low_level_channels: int = 48,
        channels: int = 256,
    ) -> None:
        super().__init__()
        self.low_project = ConvBNReLU(low_channels, low_level_channels, 1)
        self.fuse = nn.Sequential(
            ConvBNReLU(aspp_channels + low_level_channels, channels, 3),
            ConvBNReLU(channels, channels, 3),
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        low = self.low_project(low)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([high, low], dim=1)))


class DeepLabV3Plus(EncoderDecoder):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        encoder: str = "resnet50",
        output_stride: int = 16,
        aspp_rates: Sequence[int] | None = None,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = dilated_encoder(encoder, in_channels, output_stride)
        if LOW_LEVEL_STRIDE not in self.encoder.strides:
            raise InputError(
                f"deeplabv3p: encoder {encoder} has no features at stride {LOW_LEVEL_STRIDE} "
                f"for the decoder (its strides: {self.encoder.strides})"
            )
        self.low_level = self.encoder.strides.index(LOW_LEVEL_STRIDE)
        if aspp_rates is None and output_stride not in DEFAULT_RATES:
            raise InputError(
                f"deeplabv3p: no default aspp_rates at output stride {output_stride} (only at "
                f"{sorted(DEFAULT_RATES)}): set model.net.aspp_rates"
            )
        rates = DEFAULT_RATES[output_stride] if aspp_rates is None else aspp_rates
        self.aspp_rates = tuple(int(r) for r in rates)
        self.aspp = ASPP(self.encoder.channels[-1], self.aspp_rates, aspp_channels, dropout)
        self.decoder = Decoder(
            self.encoder.channels[self.low_level],
            aspp_channels,
            num_classes,
            low_level_channels,
            decoder_channels,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        logits = self.decoder(self.aspp(features[-1]), features[self.low_level])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

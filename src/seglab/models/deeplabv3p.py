"""DeepLabV3+ (Chen et al., 2018): a dilated ResNet-50/101, ASPP and a light decoder.

``aspp`` (atrous spatial pyramid pooling) runs five parallel branches on the final features
(1x1 conv; three 3x3 convs with growing dilation; image pooling), each 256 channels with BN and
ReLU, and projects their concatenation back to 256 (1x1, BN, ReLU, dropout 0.1 as in the
reference TensorFlow code). ``decoder`` recovers boundaries DeepLabV3 blurs: layer1's stride-4
features, reduced to 48 channels so they do not outweigh the semantics, are concatenated with
the upsampled ASPP output and refined by two 3x3 convs (256) before the 1x1 classifier.

The dilation rates scale with the output stride: (6, 12, 18) at 16 and (12, 24, 36) at 8,
unless ``aspp_rates`` says otherwise (the seed project trained with ``[4, 8, 14]``). The three
parts are ``encoder`` / ``aspp`` / ``decoder``, so ``model.lr_mult`` can train each at its own
rate as the seed did.

Bilinear upsampling to the low-level map's and then the input's exact size makes any input
size work. BatchNorm in the image-pooling branch sees one value per channel and image, so
training needs a batch of at least 2 (eval mode is fine with 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.common import ConvBNReLU
from seglab.models.resnet import CHANNELS, ResNetBackbone

DEFAULT_RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


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


class DeepLabV3Plus(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "resnet50",
        output_stride: int = 16,
        aspp_rates: Sequence[int] | None = None,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = ResNetBackbone(backbone, in_channels, output_stride)
        self.default_weights = self.encoder.default_weights
        rates = DEFAULT_RATES[output_stride] if aspp_rates is None else aspp_rates
        self.aspp_rates = tuple(int(r) for r in rates)
        self.aspp = ASPP(CHANNELS["layer4"], self.aspp_rates, aspp_channels, dropout)
        self.decoder = Decoder(
            CHANNELS["layer1"], aspp_channels, num_classes, low_level_channels, decoder_channels
        )

    def load_encoder_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """torchvision ResNet ImageNet weights into the trunk (see ``ResNetBackbone``)."""
        self.encoder.load_torchvision_weights(state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        logits = self.decoder(self.aspp(features["layer4"]), features["layer1"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

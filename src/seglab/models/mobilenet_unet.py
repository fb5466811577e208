"""MobileNetV2-UNet: the TensorFlow segmentation tutorial's U-Net (the seed project's
MobileNet-Unet), on torchvision's MobileNetV2.

Encoder (the trunk): MobileNetV2's ``features`` up to block 16's projection (stride 32, 320
channels), without the last 1x1 convolution to 1280 channels, as the tutorial. Its skips are
exactly the tutorial's layers: the expansion activations (1x1 conv-BN-ReLU6) of the blocks that
downsample next, i.e. Keras's ``block_1/3/6/13_expand_relu`` = the first layer of torchvision's
``features[2]``, ``[4]``, ``[7]``, ``[14]``, at strides 2, 4, 8, 16 (96, 144, 192, 576
channels): the widest maps at each resolution, before the strided depthwise convolution.

Decoder: pix2pix upsample blocks (3x3 transposed convolution, stride 2, no bias - BatchNorm -
optional dropout - ReLU) of 512, 256, 128, 64 channels, each concatenated with its skip, and a
last 3x3 transposed convolution, stride 2, to the classes at full resolution. 6.47M parameters
at 3 classes (6,504,227 as Keras counts, with the BatchNorm statistics: the tutorial's summary).

Any input size works without padding the input: every strided convolution of MobileNetV2 gives
ceil(size / 2), so each upsampled map (exactly twice its input) is cropped to its skip's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import nn

from seglab.errors import InputError
from seglab.models.base import SegmentationNet, Tensors
from seglab.models.common import replace_first_conv
from seglab.models.state_dicts import load_exact, with_bn_counters

# The strided inverted-residual blocks whose expansion activation is a skip (strides 2-16).
SKIP_BLOCKS = (2, 4, 7, 14)
ENCODER_BLOCKS = 18  # features[:18]: through block 16's projection (stride 32)


class UpBlock(nn.Sequential):
    """pix2pix's ``upsample``: x2 transposed convolution, BatchNorm, dropout, ReLU."""

    def __init__(self, cin: int, cout: int, dropout: float) -> None:
        super().__init__(
            nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.ReLU(inplace=True),
        )


class MobileNetV2UNet(SegmentationNet):
    default_weights = "MobileNet_V2_Weights.IMAGENET1K_V1"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        decoder_channels: Sequence[int] = (512, 256, 128, 64),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(decoder_channels) != len(SKIP_BLOCKS):
            raise InputError(
                f"mobilenetv2_unet: decoder_channels needs {len(SKIP_BLOCKS)} widths (one per "
                f"skip), got {list(decoder_channels)}"
            )
        features = torchvision.models.mobilenet_v2(weights=None).features
        if in_channels != 3:
            replace_first_conv(features, in_channels)
        self.encoder = features[:ENCODER_BLOCKS]
        skip_channels = []
        for i in SKIP_BLOCKS:
            block = self.encoder[i]
            assert block.stride == 2 and not block.use_res_connect  # the split below needs it
            skip_channels.append(block.conv[0].out_channels)
        cin = self.encoder[ENCODER_BLOCKS - 1].out_channels
        ups = []
        for cout, cskip in zip(decoder_channels, reversed(skip_channels), strict=True):
            ups.append(UpBlock(cin, cout, dropout))
            cin = cout + cskip
        self.decoder = nn.ModuleList(ups)
        self.head = nn.ConvTranspose2d(cin, num_classes, 3, stride=2, padding=1, output_padding=1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The skips (strides 2, 4, 8, 16) and the encoder's output (stride 32)."""
        skips = []
        for i, block in enumerate(self.encoder):
            if i in SKIP_BLOCKS:  # run the block in two parts to keep its expansion
                skips.append(block.conv[0](x))
                x = block.conv[1:](skips[-1])
            else:
                x = block(x)
        return [*skips, x]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, y = self.features(x)
        for up, skip in zip(self.decoder, reversed(skips), strict=True):
            y = torch.cat([up(y)[..., : skip.shape[-2], : skip.shape[-1]], skip], dim=1)
        return self.head(y)[..., : x.shape[-2], : x.shape[-1]]

    def load_encoder_weights(self, state_dict: Tensors) -> None:
        """Loads a torchvision MobileNetV2 classification state dict into the encoder; the
        last 1x1 convolution (``features.18``) and the classifier are not part of it."""
        features = {
            k.removeprefix("features."): v
            for k, v in state_dict.items()
            if k.startswith("features.")
        }
        load_exact(self.encoder, with_bn_counters(self.encoder, features), "MobileNetV2 weights")

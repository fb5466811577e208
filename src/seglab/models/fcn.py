"""FCN-32s / 16s / 8s (Long, Shelhamer & Darrell, 2015) on any encoder (VGG16 by default), and
FastFCN8.

On VGG16 the classifier becomes convolutions: conv6 (7x7, 4096) and conv7 (1x1, 4096), each
with ReLU and dropout (``vgg.VGGClassifier``). 1x1 score layers on the stride-16 (pool4: 16s,
8s) and stride-8 (pool3: 8s) features are fused with the upsampled coarser scores by
crop-and-add, and transposed convolutions initialised to bilinear interpolation upsample
(learnable, or frozen with ``learnable_upsampling=False``).

``conv_type="ds"`` replaces every VGG convolution but the 1x1s by a depthwise-separable one
(depthwise kxk + pointwise 1x1): the seed project's FastFCN8 (about 20M parameters instead of
about 134M). ``batch_norm=True`` adds BatchNorm after each encoder convolution.

``encoder`` takes any name of the encoder table (``seglab.models.encoders``) whose last three
features are at strides 8, 16 and 32. ``encoder="efficientnet_lite0"`` puts the same heads on
an ImageNet-pretrained EfficientNet-Lite0: as FCN turns VGG's fc6 / fc7 into convolutions, the
classifier's own 1x1 convolution to 1280 channels (``conv_head``, BatchNorm, ReLU6; pretrained
with the encoder but part of the head, not the trunk) scores stride 32, fused with scores of the
stride-16 and stride-8 features (112 and 40 channels): 3.39M parameters at 5 classes. Another
encoder's stride-32 features are scored directly (dropout, 1x1 convolution).

Any input size works: pooling uses ceil mode, and every upsampled map is cropped to the size
of the map it is added to (and finally to the input), instead of Caffe's 100-pixel padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import InputError
from seglab.models.base import Encoder, EncoderDecoder, Tensors
from seglab.models.efficientnet import EfficientNetHead
from seglab.models.encoders import get_encoder, net_options
from seglab.models.vgg import VGGClassifier

STRIDES = (8, 16, 32)  # the features the score layers use: pool3, pool4, pool5


class ScoreHead(nn.Sequential):
    """Dropout and a 1x1 scorer: the head on an encoder without a classifier to reuse."""

    def __init__(self, encoder: Encoder, num_classes: int, dropout: float) -> None:
        super().__init__(nn.Dropout2d(dropout), nn.Conv2d(encoder.channels[-1], num_classes, 1))

    def load_weights(self, state_dict: Tensors) -> None:
        """Nothing pretrained here."""


# The head that turns an encoder's ImageNet classifier into convolutions; ScoreHead otherwise.
HEADS = {"vgg16": VGGClassifier, "efficientnet_lite0": EfficientNetHead}


def bilinear_kernel(channels: int, kernel: int) -> torch.Tensor:
    """Weights that make a ConvTranspose2d(channels, channels, kernel, stride=kernel // 2)
    perform bilinear interpolation on each channel separately."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    og = torch.arange(kernel, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel)
    weight[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return weight


class Upsample(nn.ConvTranspose2d):
    """x``factor`` upsampling by a transposed convolution initialised to bilinear."""

    def __init__(self, channels: int, factor: int, learnable: bool) -> None:
        super().__init__(
            channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False
        )
        with torch.no_grad():
            self.weight.copy_(bilinear_kernel(channels, 2 * factor))
        self.weight.requires_grad_(learnable)

    def forward(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        out = super().forward(x)
        if out.shape[-2] < size[0] or out.shape[-1] < size[1]:  # never with ceil pooling
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out[..., : size[0], : size[1]]


class FCN(EncoderDecoder):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        variant: str = "8s",
        conv_type: str = "conv",
        batch_norm: bool = False,
        dropout: float = 0.5,
        learnable_upsampling: bool = True,
        encoder: str = "vgg16",
    ) -> None:
        super().__init__()
        if variant not in ("32s", "16s", "8s"):
            raise InputError(f"fcn: variant must be '32s', '16s' or '8s', got {variant!r}")
        self.variant = variant
        options = {"conv_type": conv_type, "batch_norm": batch_norm}
        fixed = {"conv_type": "conv", "batch_norm": False}
        self.encoder = get_encoder(
            encoder, in_channels, **net_options("fcn", encoder, options, fixed)
        )
        if self.encoder.strides[-3:] != STRIDES:
            raise InputError(
                f"fcn: the score layers need features at strides {STRIDES}; encoder {encoder} "
                f"ends at strides {self.encoder.strides[-3:]}"
            )
        s8, s16 = self.encoder.channels[-3:-1]
        self.classifier = HEADS.get(encoder, ScoreHead)(self.encoder, num_classes, dropout)
        if variant in ("16s", "8s"):
            self.score_pool4 = nn.Conv2d(s16, num_classes, 1)
            self.up_pool5 = Upsample(num_classes, 2, learnable_upsampling)
        if variant == "8s":
            self.score_pool3 = nn.Conv2d(s8, num_classes, 1)
            self.up_pool4 = Upsample(num_classes, 2, learnable_upsampling)
        up = {"32s": 32, "16s": 16, "8s": 8}[variant]
        self.up_final = Upsample(num_classes, up, learnable_upsampling)
        for m in (getattr(self, "score_pool4", None), getattr(self, "score_pool3", None)):
            if m is not None:  # as in the paper: skip scores start at zero
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def load_encoder_weights(self, state_dict: Tensors) -> None:
        """The encoder's ImageNet weights, and the classifier layers the head reuses: VGG16's
        fc6 / fc7 reshaped into conv6 / conv7 (as Long et al.), EfficientNet-Lite0's
        conv_head with its BatchNorm."""
        super().load_encoder_weights(state_dict)
        self.classifier.load_weights(state_dict)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The features at strides 8, 16, 32 (VGG: pool3, pool4, pool5).
        *_, pool3, pool4, pool5 = self.encoder(x)
        score = self.classifier(pool5)
        if self.variant in ("16s", "8s"):
            skip = self.score_pool4(pool4)
            score = self.up_pool5(score, skip.shape[-2:]) + skip
        if self.variant == "8s":
            skip = self.score_pool3(pool3)
            score = self.up_pool4(score, skip.shape[-2:]) + skip
        return self.up_final(score, x.shape[-2:])

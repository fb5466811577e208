"""torchvision's ResNets for the encoder table, dilated on request (DeepLabV3+, PSPNet).

``output_stride`` 8 or 16 replaces the last strides by dilation
(``replace_stride_with_dilation``): the final features stay at 1/8 or 1/16 of the input
instead of 1/32, dense for the heads without losing the receptive field. ResNet-18/34's basic
blocks cannot be dilated (torchvision), so they stay at 32. Only the convolutional layers are
kept (no average pooling or classifier), under torchvision's own names (``conv1``, ``bn1``,
``layer1`` ... ``layer4``): ImageNet weights load key for key.
"""

from __future__ import annotations

import torch
import torchvision

from seglab.errors import InputError
from seglab.models.base import Encoder, Tensors
from seglab.models.common import replace_first_conv
from seglab.models.state_dicts import load_exact, with_bn_counters

# Which of layer2 / layer3 / layer4 trade their stride 2 for dilation.
DILATION = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}
BASIC = ("resnet18", "resnet34")  # basic blocks: no dilation
RESNETS = (*BASIC, "resnet50", "resnet101")


class ResNetEncoder(Encoder):
    """Returns the stem's activation (stride 2, before max pooling) and the outputs of
    layer1 (4), layer2 (8), layer3 (16, or 8 dilated) and layer4 (``output_stride``)."""

    def __init__(self, name: str, in_channels: int = 3, output_stride: int = 32) -> None:
        super().__init__()
        if name not in RESNETS:
            raise InputError(f"the ResNet encoder must be one of {RESNETS}, got {name!r}")
        allowed = (32,) if name in BASIC else tuple(DILATION)
        if output_stride not in allowed:
            raise InputError(
                f"encoder {name}: output_stride {output_stride!r} is not one of {allowed}; set "
                f"model.net.output_stride={allowed[-1]}"
            )
        net = getattr(torchvision.models, name)(
            weights=None, replace_stride_with_dilation=DILATION[output_stride]
        )
        if in_channels != 3:
            replace_first_conv(net, in_channels)
        for part in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, part, getattr(net, part))
        self.name = name
        expansion = net.fc.in_features // 512  # 1 for basic blocks, 4 for bottlenecks
        self.channels = (64, *(w * expansion for w in (64, 128, 256, 512)))
        self.strides = (2, 4, 8, min(16, output_stride), output_stride)
        self.default_weights = f"ResNet{name.removeprefix('resnet')}_Weights.IMAGENET1K_V1"

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        features = [stem, self.layer1(self.maxpool(stem))]
        for layer in (self.layer2, self.layer3, self.layer4):
            features.append(layer(features[-1]))
        return features

    def load_weights(self, state_dict: Tensors) -> None:
        """Loads a torchvision ResNet classification state dict (``fc.*`` is ignored), or the
        ``backbone.*`` part of a torchvision segmentation model's (e.g. DeepLabV3-ResNet50 on
        COCO). Every trunk tensor must be supplied with the right shape and no other (but
        ``fc.*``), else ValueError: with ``in_channels != 3``, ImageNet weights do not fit
        ``conv1`` and are refused rather than loaded without it."""
        if any(k.startswith("backbone.") for k in state_dict):
            state_dict = {
                k.removeprefix("backbone."): v
                for k, v in state_dict.items()
                if k.startswith("backbone.")
            }
        own = self.state_dict()
        # ResNet-101 weights hold every ResNet-50 key: refuse them rather than load a part.
        extra = [k for k in state_dict if k not in own and not k.startswith("fc.")]
        if extra:
            raise InputError(
                f"{self.name} weights: {len(extra)} tensors the trunk does not have (e.g. "
                f"{', '.join(extra[:3])}); do the weights belong to another depth?"
            )
        # Checkpoints saved before PyTorch 0.4.1 lack BatchNorm's step counter, which no
        # computation here uses: keep ours rather than refuse the file.
        load_exact(self, with_bn_counters(self, state_dict), f"{self.name} weights")

"""A dilated ResNet-50/101 trunk for PSPNet and DeepLabV3+.

torchvision's ResNet with its last strides replaced by dilation (``replace_stride_with_dilation``)
keeps the final feature map at 1/8 or 1/16 of the input instead of 1/32, so the heads see
dense features without losing the receptive field. Only the convolutional layers are kept
(no average pooling or classifier), under torchvision's own names (``conv1``, ``bn1``,
``layer1`` ... ``layer4``): ImageNet weights load key for key.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torchvision
from torch import nn

from seglab.models.common import replace_first_conv
from seglab.models.pretrained import load_exact
from seglab.models.torchvision_seg import BACKBONE_WEIGHTS

BACKBONES = ("resnet50", "resnet101")
# Which of layer2 / layer3 / layer4 trade their stride 2 for dilation.
DILATION = {8: [False, True, True], 16: [False, False, True]}
# Channels of the features returned by ``ResNetBackbone.forward``.
CHANNELS = {"layer1": 256, "layer3": 1024, "layer4": 2048}


class ResNetBackbone(nn.Module):
    """Returns ``{"layer1": stride 4, "layer3": stride 8 or 16, "layer4": output_stride}``:
    the low-level features (DeepLabV3+'s decoder), the auxiliary head's input (PSPNet) and
    the final features."""

    def __init__(
        self, backbone: str = "resnet50", in_channels: int = 3, output_stride: int = 16
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        if output_stride not in DILATION:
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride!r}")
        net = getattr(torchvision.models, backbone)(
            weights=None, replace_stride_with_dilation=DILATION[output_stride]
        )
        if in_channels != 3:
            replace_first_conv(net, in_channels)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(net, name))
        self.name, self.output_stride = backbone, output_stride
        self.default_weights = BACKBONE_WEIGHTS[backbone]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        mid = self.layer3(self.layer2(low))
        return {"layer1": low, "layer3": mid, "layer4": self.layer4(mid)}

    def load_torchvision_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
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
            raise ValueError(
                f"{self.name} weights: {len(extra)} tensors the trunk does not have (e.g. "
                f"{', '.join(extra[:3])}); do the weights belong to another depth?"
            )
        # Checkpoints saved before PyTorch 0.4.1 lack BatchNorm's step counter, which no
        # computation here uses: keep ours rather than refuse the file.
        counters = {k: v for k, v in own.items() if k.endswith(".num_batches_tracked")}
        load_exact(self, {**counters, **state_dict}, f"{self.name} weights")

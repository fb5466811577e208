"""torchvision's segmentation models (FCN-ResNet, DeepLabV3, LR-ASPP MobileNetV3) as seglab
nets: a new head for ``num_classes``, ``.encoder`` = the backbone (the trunk), and the dict
output (``"out"``, and ``"aux"`` with ``aux_loss=True``) that SegmentationModule understands.
Their heads upsample to the input's size, so any input size works.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from seglab.errors import InputError
from seglab.models.base import SegmentationNet, Tensors
from seglab.models.common import replace_first_conv
from seglab.models.state_dicts import load_all_but_heads, load_exact

ARCHS = (
    "fcn_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
)
# The ImageNet weights torchvision itself puts into each backbone (``weights_backbone``).
BACKBONE_WEIGHTS = {
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V1",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
}
# Class-specific last layers, replaced when segmentation weights of other classes are loaded.
HEAD_KEYS = (
    "classifier.4.",
    "aux_classifier.4.",
    "classifier.low_classifier.",
    "classifier.high_classifier.",
)


class TorchvisionSegmentation(SegmentationNet):
    def __init__(
        self, arch: str, num_classes: int, in_channels: int = 3, aux_loss: bool = False
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise InputError(f"unknown torchvision segmentation arch {arch!r}; one of {ARCHS}")
        builder = getattr(torchvision.models.segmentation, arch)
        kwargs = {} if arch.startswith("lraspp") else {"aux_loss": aux_loss}
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
        if in_channels != 3:
            replace_first_conv(model.backbone, in_channels)
        self.model = model
        self.default_weights = BACKBONE_WEIGHTS[arch.split("_", 1)[1]]

    def load_encoder_weights(self, state_dict: Tensors) -> None:
        """ImageNet classification weights go into the backbone. The weights of a whole
        torchvision segmentation model (e.g. ``model.pretrained=
        FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1``) load everything but the class-specific
        last layers when the class count differs: the seed's transfer-learning recipe."""
        if any(k.startswith("backbone.") for k in state_dict):
            what = f"segmentation weights do not fit {self.model.__class__.__name__}"
            load_all_but_heads(self.model, state_dict, HEAD_KEYS, what)
            return
        backbone = {k.removeprefix("features."): v for k, v in state_dict.items()}
        load_exact(self.model.backbone, backbone, "ImageNet weights")

    @property
    def encoder(self) -> nn.Module:
        return self.model.backbone

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.model(x))

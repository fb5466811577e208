"""torchvision's segmentation models (FCN-ResNet, DeepLabV3, LR-ASPP MobileNetV3) as seglab
nets: a new head for ``num_classes``, ``.encoder`` = the backbone (the trunk), and the dict
output (``"out"``, and ``"aux"`` with ``aux_loss=True``) that SegmentationModule understands.
Their heads upsample to the input's size, so any input size works.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

ARCHS = (
    "fcn_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
)


def _replace_first_conv(module: nn.Module, in_channels: int) -> None:
    """Swaps the first convolution for one taking ``in_channels`` inputs (same geometry)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            setattr(
                module,
                name,
                nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    child.bias is not None,
                ),
            )
            return
        if any(isinstance(m, nn.Conv2d) for m in child.modules()):
            _replace_first_conv(child, in_channels)
            return


class TorchvisionSegmentation(nn.Module):
    def __init__(
        self, arch: str, num_classes: int, in_channels: int = 3, aux_loss: bool = False
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown torchvision segmentation arch {arch!r}; one of {ARCHS}")
        builder = getattr(torchvision.models.segmentation, arch)
        kwargs = {} if arch.startswith("lraspp") else {"aux_loss": aux_loss}
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
        if in_channels != 3:
            _replace_first_conv(model.backbone, in_channels)
        self.model = model

    @property
    def encoder(self) -> nn.Module:
        return self.model.backbone

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.model(x))

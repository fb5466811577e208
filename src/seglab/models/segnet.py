"""SegNet (Badrinarayanan, Kendall & Cipolla, 2017): a VGG16-BN encoder and a mirrored
decoder that upsamples with the encoder's max-pooling indices (no learnt upsampling).

The decoder mirrors every encoder convolution; its last convolution of each stage maps to
the next stage's width, and the final one to ``num_classes`` (about 29.5M parameters).
Pooling uses ceil mode and unpooling restores each stage's exact size, so any input size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.base import SegmentationNet, Tensors
from seglab.models.common import ConvBNReLU
from seglab.models.vgg import VGG16_STAGES, load_vgg_features


class SegNetEncoder(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        stages, cin = [], in_channels
        for widths in VGG16_STAGES:
            layers = []
            for cout in widths:
                layers.append(ConvBNReLU(cin, cout))
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list, list]:
        indices, sizes = [], []
        for stage in self.stages:
            x = stage(x)
            sizes.append(x.shape[-2:])
            x, idx = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
            indices.append(idx)
        return x, indices, sizes


def unpool(x: torch.Tensor, indices: torch.Tensor, size: torch.Size) -> torch.Tensor:
    """Max-unpooling by scatter: each value goes back where the encoder's max came from.
    Unlike ``F.max_unpool2d`` it is allowed under ``trainer.deterministic=true`` (pooling
    windows do not overlap, so no two values share a target)."""
    n, c = x.shape[:2]
    out = x.new_zeros(n, c, size[0] * size[1])
    out.scatter_(2, indices.reshape(n, c, -1), x.reshape(n, c, -1))
    return out.view(n, c, size[0], size[1])


class SegNet(SegmentationNet):
    default_weights = "VGG16_BN_Weights.IMAGENET1K_V1"

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.encoder = SegNetEncoder(in_channels)
        stages = []
        mirrored = [list(reversed(w)) for w in reversed(VGG16_STAGES)]
        outs = [w[0] for w in reversed(VGG16_STAGES)][1:] + [VGG16_STAGES[0][0]]
        for widths, out in zip(mirrored, outs, strict=True):
            layers = [ConvBNReLU(c, c) for c in widths[:-1]]
            layers.append(ConvBNReLU(widths[-1], out))
            stages.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(stages)
        self.head = nn.Conv2d(VGG16_STAGES[0][0], num_classes, 3, padding=1)

    def load_encoder_weights(self, state_dict: Tensors) -> None:
        """torchvision's VGG16-BN ImageNet weights, as the SegNet paper initialised it."""
        load_vgg_features(self.encoder, state_dict, "VGG16-BN weights")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, indices, sizes = self.encoder(x)
        for stage, idx, size in zip(self.decoder, reversed(indices), reversed(sizes), strict=True):
            y = stage(unpool(y, idx, size))
        return self.head(y)

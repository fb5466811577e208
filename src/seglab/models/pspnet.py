"""PSPNet (Zhao et al., 2017): a dilated encoder (ResNet-50 by default; any name of the
encoder table, ``backbone``) and the pyramid pooling module.

The pyramid pooling module (``ppm``) average-pools the final features into 1x1, 2x2, 3x3 and
6x6 grids (``bins``), reduces each to ``in / len(bins)`` channels (1x1 conv, BN, ReLU),
upsamples them back and concatenates them with the features: global and sub-region context
next to the local features. ``head`` fuses them (3x3 conv to 512, BN, ReLU, dropout 0.1, 1x1
classifier). With ``aux_loss=True`` an auxiliary FCN head (``aux_head``) on the features
before the last (ResNet: layer3) adds the paper's deep supervision, returned as ``"aux"``.

Adaptive pooling and bilinear upsampling to the input's size make any input size work.
BatchNorm after the 1x1 bin sees one value per channel and image, so training needs a batch
of at least 2 (eval mode, e.g. predicting a single image, is fine).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.base import EncoderDecoder
from seglab.models.common import ConvBNReLU
from seglab.models.encoders import dilated_encoder


def integral_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` computed from an integral image, with the bin edges
    (PyTorch's: start ``floor(i * L / b)``, end ``ceil((i + 1) * L / b)``) taken from the
    tensor's runtime shape. The ONNX exporter cannot export adaptive pooling to a size that
    does not divide a dynamic input; this can (gathers from a cumulative sum)."""
    shape = torch._shape_as_tensor(x)
    i = torch.arange(bins)

    def edges(length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (i * length) // bins, ((i + 1) * length + bins - 1) // bins

    (top, bottom), (left, right) = edges(shape[2]), edges(shape[3])
    s = F.pad(x.float().cumsum(2).cumsum(3), (1, 0, 1, 0))  # s[..., y, x]: sum above-left

    def corner(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return s.index_select(2, rows).index_select(3, cols)

    total = corner(bottom, right) - corner(top, right) - corner(bottom, left) + corner(top, left)
    area = (bottom - top)[:, None] * (right - left)[None, :]
    return (total / area).to(x.dtype)


class AdaptiveAvgPool(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` that exports to ONNX with dynamic height and width
    (``integral_avg_pool`` while exporting, the native kernel otherwise)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return integral_avg_pool(x, int(self.output_size))
        return super().forward(x)


class PyramidPooling(nn.Module):
    """Concatenates the input with its pooled, reduced and upsampled versions."""

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        reduced = in_channels // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(AdaptiveAvgPool(int(b)), ConvBNReLU(in_channels, reduced, 1))
            for b in bins
        )
        self.out_channels = in_channels + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False)
            for stage in self.stages
        ]
        return torch.cat([x, *pooled], dim=1)


def fcn_head(in_channels: int, mid_channels: int, num_classes: int, dropout: float) -> nn.Module:
    """3x3 conv, BN, ReLU, dropout, 1x1 classifier: PSPNet's fusion and auxiliary heads."""
    return nn.Sequential(
        ConvBNReLU(in_channels, mid_channels, 3),
        nn.Dropout(dropout),
        nn.Conv2d(mid_channels, num_classes, 1),
    )


class PSPNet(EncoderDecoder):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "resnet50",
        output_stride: int = 8,
        bins: Sequence[int] = (1, 2, 3, 6),
        aux_loss: bool = True,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.encoder = dilated_encoder(backbone, in_channels, output_stride)
        *_, aux_channels, channels = self.encoder.channels
        self.ppm = PyramidPooling(channels, tuple(bins))
        self.head = fcn_head(self.ppm.out_channels, 512, num_classes, dropout)
        self.aux_head = fcn_head(aux_channels, 256, num_classes, dropout) if aux_loss else None

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        size = x.shape[-2:]
        *_, mid, features = self.encoder(x)
        out = self.head(self.ppm(features))
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        if self.aux_head is None:
            return out
        aux = F.interpolate(self.aux_head(mid), size=size, mode="bilinear", align_corners=False)
        return {"out": out, "aux": aux}

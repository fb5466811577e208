"""FCN-32s / 16s / 8s (Long, Shelhamer & Darrell, 2015) on a VGG16 encoder, and FastFCN8.

The VGG16 classifier becomes convolutions: conv6 (7x7, 4096) and conv7 (1x1, 4096), each with
ReLU and dropout. 1x1 score layers on pool4 (16s, 8s) and pool3 (8s) are fused with the
upsampled coarser scores by crop-and-add, and transposed convolutions initialised to bilinear
interpolation upsample (learnable, or frozen with ``learnable_upsampling=False``).

``conv_type="ds"`` replaces every convolution but the 1x1s by a depthwise-separable one
(depthwise kxk + pointwise 1x1): the seed project's FastFCN8 (about 20M parameters instead of
about 134M). ``batch_norm=True`` adds BatchNorm after each encoder convolution.

``encoder="efficientnet_lite0"`` puts the same heads on an ImageNet-pretrained EfficientNet-Lite0
(``seglab.models.efficientnet``): as FCN turns VGG's fc6 / fc7 into convolutions, the
classifier's own 1x1 convolution to 1280 channels (``conv_head``, BatchNorm, ReLU6; pretrained
with the encoder but part of the head, not the trunk) scores stride 32, fused with scores of the
stride-16 and stride-8 features (112 and 40 channels): 3.39M parameters at 5 classes.

Any input size works: pooling uses ceil mode, and every upsampled map is cropped to the size
of the map it is added to (and finally to the input), instead of Caffe's 100-pixel padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models import efficientnet
from seglab.models.common import Float32Conv2d
from seglab.models.pretrained import load_vgg_features

ENCODERS = ("vgg16", efficientnet.NAME)
VGG16_STAGES = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


def conv(cin: int, cout: int, kernel: int, conv_type: str, bias: bool = True) -> nn.Module:
    """A 'same'-padded convolution, standard or depthwise-separable."""
    if conv_type == "conv" or kernel == 1:
        return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
    if conv_type == "ds":
        return nn.Sequential(
            nn.Conv2d(cin, cin, kernel, padding=kernel // 2, groups=cin, bias=bias),
            nn.Conv2d(cin, cout, 1, bias=bias),
        )
    raise ValueError(f"conv_type must be 'conv' or 'ds', got {conv_type!r}")


class VGG16Encoder(nn.Module):
    """VGG16's five convolution stages, each ending in 2x2 max pooling; returns the pooled
    output of every stage (strides 2, 4, 8, 16, 32)."""

    def __init__(self, in_channels: int, conv_type: str = "conv", batch_norm: bool = False) -> None:
        super().__init__()
        stages, cin = [], in_channels
        for widths in VGG16_STAGES:
            layers: list[nn.Module] = []
            for cout in widths:
                layers.append(conv(cin, cout, 3, conv_type, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(cout))
                layers.append(nn.ReLU(inplace=True))
                cin = cout
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


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


class FCN(nn.Module):
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
            raise ValueError(f"fcn: variant must be '32s', '16s' or '8s', got {variant!r}")
        self.variant, self.conv_type, self.encoder_name = variant, conv_type, encoder
        if encoder == "vgg16":
            self.default_weights = (
                "VGG16_BN_Weights.IMAGENET1K_V1" if batch_norm else "VGG16_Weights.IMAGENET1K_V1"
            )
            self.encoder = VGG16Encoder(in_channels, conv_type, batch_norm)
            s8, s16 = 256, 512
            self.classifier = nn.Sequential(
                conv(512, 4096, 7, conv_type),
                nn.ReLU(inplace=True),
                nn.Dropout2d(dropout),
                nn.Conv2d(4096, 4096, 1),
                nn.ReLU(inplace=True),
                nn.Dropout2d(dropout),
                Float32Conv2d(4096, num_classes, 1),  # see Float32Conv2d: bf16 crashes here
            )
            # He initialisation, as torchvision's VGG: PyTorch's default leaves a 15-layer
            # plain net training from scratch with vanishing signals.
            for m in [*self.encoder.modules(), *self.classifier.modules()]:
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        elif encoder == efficientnet.NAME:
            if conv_type != "conv":
                raise ValueError(
                    f"fcn: conv_type={conv_type!r} is for the VGG16 encoder (FastFCN8); "
                    f"{encoder} has its own convolutions: use model.net.conv_type=conv"
                )
            self.default_weights = efficientnet.WEIGHTS
            self.encoder = efficientnet.efficientnet_lite0(in_channels, out_indices=(2, 3, 4))
            self.compile_dynamic = efficientnet.COMPILE_DYNAMIC
            _, _, s8, s16, s32 = efficientnet.CHANNELS
            head = efficientnet.HEAD_CHANNELS
            self.classifier = nn.Sequential(
                nn.Conv2d(s32, head, 1, bias=False),
                nn.BatchNorm2d(head, eps=1e-3),
                nn.ReLU6(inplace=True),
                nn.Dropout2d(dropout),
                nn.Conv2d(head, num_classes, 1),
            )
        else:
            raise ValueError(f"fcn: model.encoder={encoder!r}; use one of {ENCODERS}")
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

    def load_encoder_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """torchvision VGG16 ImageNet weights: the convolution stages, and (as Long et al.
        did) fc6 / fc7 reshaped into conv6 / conv7 when the convolutions are standard.
        EfficientNet-Lite0's: the encoder, and conv_head with its BatchNorm into the
        classifier."""
        if self.encoder_name == efficientnet.NAME:
            efficientnet.load_efficientnet_weights(self.encoder, state_dict, head=self.classifier)
            return
        load_vgg_features(self.encoder, state_dict, "VGG16 weights")
        if self.conv_type == "conv":
            with torch.no_grad():
                for i in (0, 3):
                    w = state_dict[f"classifier.{i}.weight"]
                    self.classifier[i].weight.copy_(w.view_as(self.classifier[i].weight))
                    self.classifier[i].bias.copy_(state_dict[f"classifier.{i}.bias"])

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

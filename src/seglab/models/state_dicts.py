"""Putting a state dict into a module: every tensor or an error naming the misfits, never a
partial load that would leave random weights behind silently."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from seglab.errors import InputError

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
        raise InputError(
            f"{source} does not fit {type(module).__name__}: {' and '.join(problems)}. "
            "Check the architecture options (depth, in_channels) against the weights."
        )
    module.load_state_dict({k: state_dict[k] for k in own})


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
        raise InputError(
            f"{what}: {len(unfit)} tensors missing or of another shape (e.g. {unfit[:3]})"
        )
    model.load_state_dict(own | fits)


def with_bn_counters(module: nn.Module, state_dict: Tensors) -> dict[str, torch.Tensor]:
    """Adds the BatchNorm ``num_batches_tracked`` counters that checkpoints saved before
    PyTorch 0.4.1 lack (as ``load_state_dict`` itself tolerates), keeping the module's own."""
    out = dict(state_dict)
    for key, value in module.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in out:
            prefix = key.removesuffix("num_batches_tracked")
            if f"{prefix}running_mean" in out:  # only where the BatchNorm itself is supplied
                out[key] = value
    return out

"""Per-pixel uncertainty from a segmentation net's (calibrated) probabilities: the softmax
entropy, and, when test-time augmentation gives several views, how much the views disagree.

Both maps are scaled to [0, 1] so that one threshold or one grey ramp reads the same for
any number of classes: the entropy is divided by log C (1: all classes equally likely), the
views' variance by the largest value it can take for that many views and classes (1: every
view sure of a different class). A one-channel binary net counts as two classes
(``seglab.calibration.probabilities`` gives [1 - sigmoid, sigmoid]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def normalised_entropy(probs: torch.Tensor) -> torch.Tensor:
    """-sum_c p log p / log C of (N, C, H, W) probabilities -> (N, H, W) in [0, 1]
    (0 log 0 = 0; a one-class net is never uncertain)."""
    classes = probs.shape[1]
    if classes < 2:
        return probs.new_zeros(probs.shape[:1] + probs.shape[2:])
    p = probs.float()
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(1e-30)), torch.zeros_like(p))
    return (-plogp.sum(dim=1) / math.log(classes)).clamp(0, 1)


def max_view_variance(views: int, classes: int) -> float:
    """The largest sum over classes of the variance (over ``views`` probability vectors)
    that ``views`` views of ``classes`` classes can reach: each view certain of one class,
    the views spread as evenly as possible over the classes. Then the variance is
    E||p||^2 - ||mean p||^2 = 1 - sum_k n_k^2 / V^2 for n_k views on class k."""
    if views < 2 or classes < 2:
        return 0.0
    parts = min(views, classes)
    base, extra = divmod(views, parts)
    squares = extra * (base + 1) ** 2 + (parts - extra) * base**2
    return 1.0 - squares / views**2


def view_variance(view_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The spread of test-time augmentation: per pixel, the variance of each class's
    probability across the views (population variance), summed over the classes and divided
    by ``max_view_variance``: (N, H, W) in [0, 1]. Needs at least two views."""
    if len(view_probs) < 2:
        raise ValueError("view_variance needs at least two views")
    stacked = torch.stack([p.float() for p in view_probs])  # (V, N, C, H, W)
    var = stacked.var(dim=0, unbiased=False).sum(dim=1)
    scale = max_view_variance(len(view_probs), stacked.shape[2])
    return (var / scale).clamp(0, 1) if scale > 0 else torch.zeros_like(var)


def grey_levels(values: np.ndarray, bits: int = 8) -> np.ndarray:
    """Values in [0, 1] as grey levels: round(v * 255) as uint8, or round(v * 65535) as
    uint16 with ``bits=16`` (what the ``_entropy.png`` / ``_tta_var.png`` files hold)."""
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    top, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
    return np.rint(np.clip(values, 0, 1) * top).astype(dtype)

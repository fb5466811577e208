"""Segmentation losses, each built from config (``conf/loss/``).

All take raw logits (N, C, H, W) and integer labels (N, H, W) with ``ignore_index`` marking
pixels that never count. ``BCEWithLogits`` serves single-channel binary nets (C == 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seglab.errors import InputError


def _weight_tensor(weight: Sequence[float] | None) -> torch.Tensor | None:
    return None if weight is None else torch.as_tensor(list(weight), dtype=torch.float32)


class CrossEntropy(nn.Module):
    def __init__(
        self,
        ignore_index: int = 255,
        weight: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", _weight_tensor(weight), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(),
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


class OhemCrossEntropy(CrossEntropy):
    """Cross-entropy over the hard pixels only (online hard example mining, as
    mmsegmentation's OHEMPixelSampler), so that the many easy pixels of large classes stop
    drowning the rare ones.

    A labelled pixel is kept when the predicted probability of its true class is below
    ``thresh``; when fewer than ``min_kept`` pixels of the batch are, the ``min_kept`` least
    confident ones are kept instead (all of them if the batch has fewer). The loss is the
    (class-weighted) mean cross-entropy over the kept pixels.
    """

    def __init__(
        self,
        ignore_index: int = 255,
        weight: Sequence[float] | None = None,
        thresh: float = 0.7,
        min_kept: int = 100000,
    ) -> None:
        super().__init__(ignore_index=ignore_index, weight=weight)
        if not 0 < thresh <= 1:
            raise InputError(f"loss.thresh={thresh}: must be in (0, 1]")
        if min_kept < 0:
            raise InputError(f"loss.min_kept={min_kept}: must be >= 0")
        self.thresh = thresh
        self.min_kept = int(min_kept)

    @torch.no_grad()
    def hard_pixels(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The (N, H, W) mask of the pixels the loss counts."""
        valid = target != self.ignore_index
        safe = torch.where(valid, target, 0).unsqueeze(1)
        prob = logits.float().softmax(1).gather(1, safe).squeeze(1)
        kept = valid & (prob < self.thresh)
        k = min(self.min_kept, int(valid.sum()))
        if int(kept.sum()) < k:
            # Raise the threshold to the k-th smallest probability (ties all kept).
            kth = prob[valid].kthvalue(k).values
            kept = valid & (prob <= kth)
        return kept

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        kept = self.hard_pixels(logits, target)
        if not kept.any():  # no labelled pixel: nothing to learn, keep the graph
            return logits.float().sum() * 0.0
        return super().forward(logits, torch.where(kept, target, self.ignore_index))


class BCEWithLogits(nn.Module):
    """Binary cross-entropy for a single-channel net: label 1 is the positive class."""

    def __init__(self, ignore_index: int = 255, pos_weight: float | None = None) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[1] != 1:
            raise InputError(
                f"bce loss needs a single-channel net, got {logits.shape[1]} channels: "
                "set model.net.num_classes=1 or use loss=ce"
            )
        valid = (target != self.ignore_index).float()
        pos_weight = None
        if self.pos_weight is not None:
            pos_weight = torch.tensor(self.pos_weight, device=logits.device)
        per_pixel = F.binary_cross_entropy_with_logits(
            logits[:, 0].float(),
            (target == 1).float(),
            pos_weight=pos_weight,
            reduction="none",
        )
        return (per_pixel * valid).sum() / valid.sum().clamp(min=1)


def _probs_and_onehot(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax probabilities, one-hot labels and the valid-pixel mask (N, 1, H, W)."""
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    if num_classes == 1:
        p = torch.sigmoid(logits.float())
        probs = torch.cat([1 - p, p], dim=1)
        num_classes = 2
    else:
        probs = logits.float().softmax(dim=1)
    safe = torch.where(valid.squeeze(1), target, 0).clamp(max=num_classes - 1)
    onehot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).float()
    return probs, onehot, valid.float()


class Dice(nn.Module):
    """Soft Dice loss (1 - mean Dice over classes present in the batch's labels or
    predictions), computed over the valid pixels of the whole batch."""

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs, onehot, valid = _probs_and_onehot(logits, target, self.ignore_index)
        probs, onehot = probs * valid, onehot * valid
        dims = (0, 2, 3)
        inter = (probs * onehot).sum(dims)
        denom = probs.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (denom + self.smooth)
        return 1 - dice.mean()


class Focal(nn.Module):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by (1 - p_t)^gamma."""

    def __init__(
        self,
        ignore_index: int = 255,
        gamma: float = 2.0,
        weight: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.gamma = gamma
        self.register_buffer("weight", _weight_tensor(weight), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        ce = F.cross_entropy(
            logits, target, weight=self.weight, ignore_index=self.ignore_index, reduction="none"
        )
        valid = target != self.ignore_index
        safe = torch.where(valid, target, 0)
        pt = logits.softmax(1).gather(1, safe.unsqueeze(1)).squeeze(1)
        loss = (1 - pt).pow(self.gamma) * ce
        return loss.sum() / valid.sum().clamp(min=1)


class WeightedSum(nn.Module):
    """A weighted sum of several losses, e.g. cross-entropy + 0.5 * Dice."""

    def __init__(self, losses: Sequence[nn.Module], weights: Sequence[float]) -> None:
        super().__init__()
        if len(losses) != len(weights):
            raise InputError(f"loss: {len(losses)} losses but {len(weights)} weights")
        self.losses = nn.ModuleList(losses)
        self.weights = list(weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(
            w * loss(logits, target) for w, loss in zip(self.weights, self.losses, strict=True)
        )

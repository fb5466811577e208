"""Segmentation metrics from one confusion matrix.

Every figure (aAcc, mAcc, mIoU, per-class IoU / accuracy / Dice) is derived from a single
``num_classes x num_classes`` matrix of pixel counts, accumulated on the device and summed
across processes. Summing counts (never averaging per-process metrics) is what makes DDP
evaluation exact, provided each sample is seen by exactly one process (see
``seglab.data.samplers.UnpaddedDistributedSampler``).

The averaging rule, documented in the README:
- IoU_c = TP / (TP + FP + FN). A class absent from both label and prediction has an undefined
  IoU (0/0 = NaN) and is left out of mIoU; it does not count as 0.
- Acc_c = TP / (TP + FN), defined for classes present in the label; mAcc averages those.
- Dice_c = 2 TP / (2 TP + FP + FN), same rule as IoU.
- aAcc = sum(TP) / number of labelled pixels.
Pixels whose label equals ``ignore_index`` never count.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ConfusionMatrix(Metric):
    """Accumulates ``confmat[label, prediction]`` pixel counts."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "confmat",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """``preds``: class indices (N, H, W) or logits (N, C, H, W); ``target``: (N, H, W).

        No host synchronisation: ignored (and out-of-range) pixels go to an overflow bin that
        is dropped, instead of boolean indexing, which would force a device-to-host copy.
        """
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(dim=1)
        c = self.num_classes
        preds = preds.reshape(-1).long()
        target = target.reshape(-1).long()
        valid = (target >= 0) & (target < c)
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        index = torch.where(valid, target * c + preds, torch.full_like(target, c * c))
        counts = torch.bincount(index, minlength=c * c + 1)[: c * c]
        self.confmat += counts.reshape(c, c)

    def compute(self) -> torch.Tensor:
        return self.confmat.clone()


def metrics_from_confmat(confmat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Derives every figure from a confusion matrix (rows: label, columns: prediction).

    Returns scalars ``aAcc``, ``mAcc``, ``mIoU``, ``mDice`` and per-class vectors ``IoU``,
    ``Acc``, ``Dice`` (NaN where undefined).
    """
    cm = confmat.double()
    tp = cm.diag()
    label_count = cm.sum(dim=1)  # TP + FN
    pred_count = cm.sum(dim=0)  # TP + FP
    union = label_count + pred_count - tp
    nan = torch.tensor(float("nan"), dtype=cm.dtype, device=cm.device)
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    acc = torch.where(label_count > 0, tp / label_count.clamp(min=1), nan)
    dice = torch.where(union > 0, 2 * tp / (label_count + pred_count).clamp(min=1), nan)
    total = cm.sum()
    return {
        "aAcc": tp.sum() / total if total > 0 else nan,
        "mAcc": acc.nanmean(),
        "mIoU": iou.nanmean(),
        "mDice": dice.nanmean(),
        "IoU": iou,
        "Acc": acc,
        "Dice": dice,
    }


def constant_prediction(confmat: torch.Tensor, cls: int) -> torch.Tensor:
    """The confusion matrix of predicting ``cls`` on every labelled pixel of the same
    labels: each row's count moves to column ``cls``."""
    out = torch.zeros_like(confmat)
    out[:, cls] = confmat.sum(dim=1)
    return out


def trivial_baselines(confmat: torch.Tensor) -> dict[str, dict[str, float]]:
    """mIoU and aAcc of the trivial predictors, from the evaluation's confusion matrix (so
    over exactly the same labelled pixels): ``majority`` predicts the most frequent label
    class everywhere; for two classes, ``all_foreground`` predicts class 1 everywhere. A
    model that does not beat them has learnt nothing."""
    label_count = confmat.sum(dim=1)
    chosen = {"majority": int(label_count.argmax())}
    if confmat.shape[0] == 2:
        chosen["all_foreground"] = 1
    out = {}
    for name, cls in chosen.items():
        m = metrics_from_confmat(constant_prediction(confmat, cls))
        out[name] = {"class": cls, "miou": float(m["mIoU"]), "aacc": float(m["aAcc"])}
    return out

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


def _boundary(mask: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of a boolean map (N, H, W): pixels of the map with a 4-neighbour
    outside it. The image border is not an edge (neighbours beyond it are the pixel itself)."""
    m = mask[:, None].float()
    padded = torch.nn.functional.pad(m, (1, 1, 1, 1), mode="replicate")[:, 0].bool()
    inside = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return mask & ~inside


def _within(edges: torch.Tensor, tolerance_px: float) -> torch.Tensor:
    """Pixels whose Euclidean distance to a pixel of ``edges`` (N, H, W) is at most
    ``tolerance_px``: a dilation by a disk of that radius."""
    r = int(tolerance_px)
    if r <= 0:
        return edges.clone()
    ys, xs = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    disk = ((ys**2 + xs**2) <= tolerance_px**2).float().to(edges.device)
    out = torch.nn.functional.conv2d(edges[:, None].float(), disk[None, None], padding=r)
    return out[:, 0] > 0.5


def boundary_fscore(
    pred: torch.Tensor,
    label: torch.Tensor,
    num_classes: int,
    tolerance_px: float = 2,
    ignore_index: int | None = 255,
    reduction: str = "mean",
) -> torch.Tensor:
    """The boundary F1 score (BF) of Csurka et al., "What is a good evaluation measure for
    semantic segmentation?" (BMVC 2013), for label maps ``pred`` and ``label`` (N, H, W) or
    (H, W) of class indices.

    Per image and class c: the boundary pixels of ``label == c`` and of ``pred == c`` (pixels
    of the class with a 4-neighbour of another class, or ignored); precision = share of the
    predicted boundary pixels within ``tolerance_px`` (Euclidean) of a true boundary pixel,
    recall = share of the true boundary pixels within ``tolerance_px`` of a predicted one,
    F_c = 2PR / (P + R) (0 when P + R = 0, or when exactly one of the two boundaries is
    empty). Predicted boundary pixels on ignored label pixels do not count (their truth is
    unknown). The classes averaged are those present in the image's label whose true or
    predicted boundary is not empty.

    Averaging: an image's BF is the mean of F_c over those classes; ``reduction="mean"``
    returns the mean over images (images without such a class are left out: NaN when none
    has one), ``"none"`` the per-image values (N,), NaN for images without such a class.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    pred, label = torch.as_tensor(pred), torch.as_tensor(label)
    if pred.dim() == 2:
        pred, label = pred[None], label[None]
    if pred.shape != label.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and label {tuple(label.shape)} differ")
    pred, label = pred.long(), label.long().to(pred.device)
    valid = torch.ones_like(label, dtype=torch.bool)
    if ignore_index is not None:
        valid &= label != ignore_index
    scores = torch.zeros(pred.shape[0], dtype=torch.float64, device=pred.device)
    counts = torch.zeros_like(scores)
    for c in range(num_classes):
        true_c = label == c
        present = true_c.flatten(1).any(dim=1)
        if not present.any():
            continue
        gt_edge = _boundary(true_c)
        pr_edge = _boundary(pred == c) & valid
        n_gt = gt_edge.flatten(1).sum(1).double()
        n_pr = pr_edge.flatten(1).sum(1).double()
        hit_pr = (pr_edge & _within(gt_edge, tolerance_px)).flatten(1).sum(1).double()
        hit_gt = (gt_edge & _within(pr_edge, tolerance_px)).flatten(1).sum(1).double()
        precision = hit_pr / n_pr.clamp(min=1)
        recall = hit_gt / n_gt.clamp(min=1)
        f = torch.where(
            precision + recall > 0,
            2 * precision * recall / (precision + recall).clamp(min=1e-12),
            torch.zeros_like(precision),
        )
        f = torch.where((n_gt > 0) & (n_pr > 0), f, torch.zeros_like(f))  # one side empty: 0
        use = present & ((n_gt > 0) | (n_pr > 0))
        scores += torch.where(use, f, torch.zeros_like(f))
        counts += use.double()
    per_image = torch.where(counts > 0, scores / counts.clamp(min=1), float("nan"))
    return per_image if reduction == "none" else per_image.nanmean()

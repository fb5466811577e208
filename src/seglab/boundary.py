"""Boundary metrics: the boundary F-score (BF) and Boundary IoU, per class.

Region metrics (IoU) are dominated by a mask's interior; these two score only the pixels
near its contour, where models differ most.

- BF (Csurka et al., "What is a good evaluation measure for semantic segmentation?", BMVC
  2013): ``boundary_fscore``; per image and class, the F1 of boundary pixels matched within
  a tolerance. The image border is not an edge here.
- Boundary IoU (Cheng, Girshick, Dollar, Berg, Kirillov, "Boundary IoU: Improving
  Object-Centric Image Segmentation Evaluation", CVPR 2021): the IoU of the masks' boundary
  bands, the mask pixels within ``d`` pixels of its contour, d = max(1, round(ratio x image
  diagonal)). As in the authors' code (a 1-pixel zero border, then d 3x3 erosions) the image
  border counts as contour: band = mask & ~erode(mask, (2d+1) x (2d+1) square, zeros
  outside). For semantic segmentation, per class c over the dataset: I_c and U_c are the
  summed pixel counts of band(label == c) & band(pred == c) and of their union, ignored
  label pixels left out of both; Boundary IoU_c = I_c / U_c.

``BoundaryStats`` accumulates both over an evaluation in integer states (BF in fixed point),
so a DDP sum over processes equals one process exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

BF_SCALE = 2**24  # fixed point of the summed per-image BF scores


def _boundary(mask: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of a boolean map (N, H, W): pixels of the map with a 4-neighbour
    outside it. The image border is not an edge (neighbours beyond it are the pixel itself)."""
    m = mask[:, None].float()
    padded = torch.nn.functional.pad(m, (1, 1, 1, 1), mode="replicate")[:, 0].bool()
    inside = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return mask & ~inside


def _within(edges: torch.Tensor, tolerance_px: float) -> torch.Tensor:
    """Pixels whose Euclidean distance to a pixel of ``edges`` (N, H, W) is at most
    ``tolerance_px``: a dilation by a disk of that radius (an OR of shifted copies, one per
    offset in the disk; far cheaper than a convolution on CPU)."""
    r = int(tolerance_px)
    if r <= 0:
        return edges.clone()
    h, w = edges.shape[-2:]
    padded = F.pad(edges, (r, r, r, r))
    out = torch.zeros_like(edges)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= tolerance_px**2:
                out |= padded[:, r + dy : r + dy + h, r + dx : r + dx + w]
    return out


def _boundary_f(
    true: torch.Tensor, pred: torch.Tensor, valid: torch.Tensor, tolerance_px: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """BF of each boolean map pair (M, H, W): ``(f, use)``, F1 (float64) and whether it
    counts (the true map is not empty and one of the two boundaries is not empty)."""
    gt_edge = _boundary(true)
    pr_edge = _boundary(pred) & valid
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
    use = true.flatten(1).any(dim=1) & ((n_gt > 0) | (n_pr > 0))
    return f, use


def boundary_fscore(
    pred: torch.Tensor,
    label: torch.Tensor,
    num_classes: int,
    tolerance_px: float = 2,
    ignore_index: int | None = 255,
    reduction: str = "mean",
) -> torch.Tensor:
    """The boundary F1 score (BF) of Csurka et al. (BMVC 2013) for label maps ``pred`` and
    ``label`` (N, H, W) or (H, W) of class indices.

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
        if not true_c.any():
            continue
        f, use = _boundary_f(true_c, pred == c, valid, tolerance_px)
        scores += torch.where(use, f, torch.zeros_like(f))
        counts += use.double()
    per_image = torch.where(counts > 0, scores / counts.clamp(min=1), float("nan"))
    return per_image if reduction == "none" else per_image.nanmean()


def boundary_dilation(height: int, width: int, ratio: float) -> int:
    """Boundary IoU's band width d for an image: max(1, round(ratio x diagonal))."""
    return max(1, int(round(ratio * math.sqrt(height * height + width * width))))


def _window_any(x: torch.Tensor, d: int, dim: int) -> torch.Tensor:
    """Whether any value in the 2d+1 window centred on each position along ``dim`` (1 or 2
    of an integer (K, H, W) map) is non-zero, counting positions beyond the border as 1:
    a max-pool of a 0 / 1 map, by running sums (its cost does not grow with d)."""
    x = F.pad(x, (0, 0, d + 1, d) if dim == 1 else (d + 1, d), value=1)
    x.narrow(dim, 0, 1).zero_()  # the running sum's start
    total = x.cumsum(dim)
    n = x.shape[dim] - (2 * d + 1)
    return (total.narrow(dim, 2 * d + 1, n) - total.narrow(dim, 0, n)) > 0


def boundary_band(masks: torch.Tensor, d: int) -> torch.Tensor:
    """The pixels of each boolean mask (K, H, W) within ``d`` (chessboard distance) of its
    contour or the image border: mask & ~erode(mask, (2d+1)^2 square, zeros outside). The
    erosion is a separable max-pool of the complement, a column pass then a row pass."""
    outside = (~masks).to(torch.int32)
    near = _window_any(_window_any(outside, d, 1).to(torch.int32), d, 2)
    return masks & near


def _labelled_extent(target: torch.Tensor, ignore_index: int | None) -> tuple[int, int]:
    """Height and width up to the last row / column holding a labelled pixel: the image
    without the bottom / right padding of a batch (which is all ``ignore_index``)."""
    if ignore_index is None:
        return tuple(target.shape)
    labelled = target != ignore_index
    rows = labelled.any(dim=1).nonzero()
    cols = labelled.any(dim=0).nonzero()
    if rows.numel() == 0:
        return 0, 0
    return int(rows[-1]) + 1, int(cols[-1]) + 1


def image_boundary_stats(
    pred: torch.Tensor,
    label: torch.Tensor,
    num_classes: int,
    ignore_index: int | None = 255,
    dilation_ratio: float = 0.02,
    tolerance_px: float = 2,
) -> dict[str, torch.Tensor]:
    """One image's (H, W) boundary figures per class: ``intersection`` and ``union`` (pixel
    counts of the Boundary IoU bands), ``bf`` (F1, float64) and ``bf_used`` (whether it
    counts, as ``boundary_fscore`` defines). Classes absent from both maps are skipped."""
    c = num_classes
    device = pred.device
    label = label.long()
    valid = (label >= 0) & (label < c)
    if ignore_index is not None:
        valid &= label != ignore_index
    out = {
        "intersection": torch.zeros(c, dtype=torch.long, device=device),
        "union": torch.zeros(c, dtype=torch.long, device=device),
        "bf": torch.zeros(c, dtype=torch.float64, device=device),
        "bf_used": torch.zeros(c, dtype=torch.bool, device=device),
    }
    seen = torch.bincount(torch.where(valid, label, c).reshape(-1), minlength=c + 1)[:c] > 0
    seen |= torch.bincount(pred.reshape(-1).long().clamp(0, c), minlength=c + 1)[:c] > 0
    classes = seen.nonzero()[:, 0]
    if classes.numel() == 0:
        return out
    true = label[None] == classes[:, None, None]  # (K, H, W)
    predicted = pred[None] == classes[:, None, None]
    d = boundary_dilation(*label.shape, dilation_ratio)
    band_true, band_pred = boundary_band(true, d) & valid, boundary_band(predicted, d) & valid
    out["intersection"][classes] = (band_true & band_pred).flatten(1).sum(1)
    out["union"][classes] = (band_true | band_pred).flatten(1).sum(1)
    f, use = _boundary_f(true, predicted, valid[None], tolerance_px)
    out["bf"][classes], out["bf_used"][classes] = f, use
    return out


class BoundaryStats(Metric):
    """Boundary IoU and BF per class over an evaluation.

    States: Boundary IoU's band intersection and union pixel counts per class; per class the
    sum of per-image F_c (fixed point, ``BF_SCALE``) and the number of images it counts in;
    the sum of per-image BF (the mean over its classes, fixed point) and the number of
    images with one. All integers: summed over processes, exactly one process's figures."""

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        dilation_ratio: float = 0.02,
        tolerance_px: float = 2,
    ) -> None:
        super().__init__()
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.dilation_ratio, self.tolerance_px = dilation_ratio, tolerance_px
        for name in ("intersection", "union", "bf_sum", "bf_images"):
            self.add_state(name, torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("image_bf_sum", "image_bf_count"):
            self.add_state(name, torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self, preds: torch.Tensor, target: torch.Tensor, sizes: torch.Tensor | None = None
    ) -> None:
        """``preds``: class indices (N, H, W); ``target``: (N, H, W). Each image is cut to
        its own size first: ``sizes`` (N, 2) when given, else (in a batch of several, which
        the collate pads bottom / right with ``ignore_index``) to its last labelled row and
        column; a batch of one is taken whole."""
        for i in range(preds.shape[0]):
            if sizes is not None:
                h, w = (int(v) for v in sizes[i])
            elif preds.shape[0] > 1:
                h, w = _labelled_extent(target[i], self.ignore_index)
            else:
                h, w = target.shape[-2:]
            if h == 0 or w == 0:
                continue
            s = image_boundary_stats(
                preds[i, :h, :w],
                target[i, :h, :w],
                self.num_classes,
                self.ignore_index,
                self.dilation_ratio,
                self.tolerance_px,
            )
            self.intersection += s["intersection"]
            self.union += s["union"]
            used = s["bf_used"]
            self.bf_sum += torch.where(used, _fixed(s["bf"]), 0)
            self.bf_images += used.long()
            if bool(used.any()):
                self.image_bf_sum += _fixed(s["bf"][used].mean())
                self.image_bf_count += 1

    def compute(self) -> dict[str, Any]:
        """``biou`` (mean over classes with a non-empty band union, NaN if none), ``bf``
        (mean over images), and per class ``biou_per_class`` / ``bf_per_class`` (lists,
        NaN where undefined)."""
        return boundary_figures(
            self.intersection,
            self.union,
            self.bf_sum,
            self.bf_images,
            self.image_bf_sum,
            self.image_bf_count,
        )


def _fixed(values: torch.Tensor) -> torch.Tensor:
    return torch.round(values.double() * BF_SCALE).long()


def boundary_figures(
    intersection: torch.Tensor,
    union: torch.Tensor,
    bf_sum: torch.Tensor,
    bf_images: torch.Tensor,
    image_bf_sum: torch.Tensor,
    image_bf_count: torch.Tensor,
) -> dict[str, Any]:
    """The figures of ``BoundaryStats``'s summed states."""
    nan = float("nan")
    inter, uni = intersection.double().cpu(), union.double().cpu()
    biou = torch.where(uni > 0, inter / uni.clamp(min=1), nan)
    images = bf_images.double().cpu()
    bf = torch.where(images > 0, bf_sum.double().cpu() / BF_SCALE / images.clamp(min=1), nan)
    count = int(image_bf_count)
    return {
        "biou": float(biou.nanmean()),
        "biou_per_class": biou.tolist(),
        "bf": float(image_bf_sum) / BF_SCALE / count if count else nan,
        "bf_per_class": bf.tolist(),
    }

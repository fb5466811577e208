"""How far a model's probabilities can be trusted: ECE, NLL and Brier score over the labelled
pixels, the reliability diagram, and the one-temperature fit of ``src/calibrate.py``.

Definitions (docs/metrics.md):
- ECE (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): pixels go to
  ``bins`` equal-width bins ``((b-1)/B, b/B]`` by their confidence (the top class
  probability); ECE = sum over bins of (n_b / N) |accuracy_b - mean confidence_b|.
- NLL: the mean of -log p(label).
- Brier score (Brier 1950, the multi-class form): the mean of sum_c (p_c - [c = label])^2,
  in [0, 2].

The states are integer sums: every pixel's confidence, NLL and Brier term is rounded to a
fixed point (``2**-20``) before summing, so a sum over any split of the pixels (batches, DDP
processes) is the same integer, and a DDP evaluation equals one process exactly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from seglab.plotting import pyplot

SCALE = 2**20  # fixed point of the per-pixel sums
NLL_CAP = 100.0  # -log p above this (p < 4e-44) counts as this: keeps the sums in int64


def two_channel(logits: torch.Tensor) -> torch.Tensor:
    """A one-channel binary net's logits z as the two-class logits [0, z]: their softmax is
    [1 - sigmoid(z), sigmoid(z)], and the argmax is the net's label (class 1 where z > 0)."""
    if logits.shape[1] != 1:
        return logits
    return torch.cat([torch.zeros_like(logits), logits], dim=1)


def probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Class probabilities softmax(logits / T) over dim 1 (one-channel nets: two classes)."""
    return torch.softmax(two_channel(logits.float()) / temperature, dim=1)


def _fixed(values: torch.Tensor) -> torch.Tensor:
    return torch.round(values.double() * SCALE).long()


class CalibrationStats(Metric):
    """Per-bin pixel counts, confidence sums and correct counts, and the NLL and Brier sums,
    of the labelled pixels (``update`` takes logits, as the module's evaluation has them)."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, num_classes: int, ignore_index: int | None = 255, bins: int = 15) -> None:
        super().__init__()
        self.num_classes, self.ignore_index, self.bins = num_classes, ignore_index, int(bins)
        for name in ("bin_count", "bin_confidence_sum", "bin_correct"):
            self.add_state(name, torch.zeros(self.bins, dtype=torch.long), dist_reduce_fx="sum")
        for name in ("nll_sum", "brier_sum", "pixels"):
            self.add_state(name, torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor, temperature: float = 1.0) -> None:
        """No host synchronisation: unlabelled pixels go to an overflow bin that is dropped."""
        z = two_channel(logits.float())
        z = z / temperature if temperature != 1 else z
        target = target.long()
        valid = (target >= 0) & (target < z.shape[1])
        if self.ignore_index is not None:
            valid &= target != self.ignore_index
        safe = torch.where(valid, target, torch.zeros_like(target))
        # One exp over the logits gives everything (a third of the time of log_softmax, exp
        # and max taken apart): e = exp(z - max z), S = sum e; the top probability is 1 / S,
        # p_label = e_label / S, sum p^2 = sum e^2 / S^2.
        top, predicted = z.max(dim=1)
        e = torch.exp(z - top[:, None])
        total = e.sum(dim=1)
        confidence = 1 / total
        z_label = z.gather(1, safe[:, None])[:, 0]
        log_pt = z_label - top - torch.log(total)
        nll = (-log_pt).clamp(max=NLL_CAP)
        brier = (e * e).sum(dim=1) / (total * total) - 2 * log_pt.exp() + 1
        zero = torch.zeros_like(nll)
        self.nll_sum += _fixed(torch.where(valid, nll, zero)).sum()
        self.brier_sum += _fixed(torch.where(valid, brier.clamp(min=0), zero)).sum()
        self.pixels += valid.sum()
        b = self.bins
        index = ((confidence * b).ceil().long() - 1).clamp(0, b - 1)
        index = torch.where(valid, index, torch.full_like(index, b)).reshape(-1)
        correct = (predicted == target) & valid

        def per_bin(values: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(b + 1, dtype=torch.long, device=values.device)
            return out.scatter_add_(0, index, values.reshape(-1))[:b]

        self.bin_count += per_bin(valid.long())
        self.bin_confidence_sum += per_bin(_fixed(torch.where(valid, confidence, zero)))
        self.bin_correct += per_bin(correct.long())

    def compute(self) -> dict[str, Any]:
        return calibration_figures(
            self.bin_count,
            self.bin_confidence_sum,
            self.bin_correct,
            self.nll_sum,
            self.brier_sum,
            self.pixels,
        )


def calibration_figures(
    bin_count: torch.Tensor,
    bin_confidence_sum: torch.Tensor,
    bin_correct: torch.Tensor,
    nll_sum: torch.Tensor,
    brier_sum: torch.Tensor,
    pixels: torch.Tensor,
) -> dict[str, Any]:
    """ECE, NLL, Brier (floats, NaN without labelled pixels) and the reliability bins from the
    summed states (confidence, NLL and Brier sums in fixed point)."""
    n = int(pixels)
    count = bin_count.double().cpu()
    conf = bin_confidence_sum.double().cpu() / SCALE
    correct = bin_correct.double().cpu()
    nan = float("nan")
    ece = float((correct - conf).abs().sum() / n) if n else nan
    used = count > 0
    return {
        "ece": ece,
        "nll": float(nll_sum) / SCALE / n if n else nan,
        "brier": float(brier_sum) / SCALE / n if n else nan,
        "pixels": n,
        "bin_count": [int(c) for c in count.tolist()],
        "bin_confidence": torch.where(used, conf / count.clamp(min=1), nan).tolist(),
        "bin_accuracy": torch.where(used, correct / count.clamp(min=1), nan).tolist(),
    }


def _mean_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    total = 0.0
    for start in range(0, logits.shape[0], 1 << 18):  # bounded memory on millions of pixels
        z, y = logits[start : start + (1 << 18)], labels[start : start + (1 << 18)]
        total += float(F.cross_entropy(z / temperature, y, reduction="sum"))
    return total / max(1, logits.shape[0])


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the mean NLL of softmax(logits / T) (Guo et al.'s
    temperature scaling). The NLL is convex in 1/T, so a golden-section search over log T in
    [0.01, 100] finds the minimum without tuning (to about 1e-6 relative)."""
    z = two_channel(logits.double()[..., None, None])[..., 0, 0]
    y = labels.long()
    if z.shape[0] == 0:
        raise ValueError("no labelled pixels to fit a temperature on")
    lo, hi = math.log(0.01), math.log(100.0)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = _mean_nll(z, y, math.exp(a)), _mean_nll(z, y, math.exp(b))
    for _ in range(50):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = _mean_nll(z, y, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = _mean_nll(z, y, math.exp(b))
    return math.exp((lo + hi) / 2)


def reliability_figure(stats: dict[str, Any], title: str) -> Any:
    """The reliability diagram: each bin's accuracy (bars) against its mean confidence (red
    lines; a bar below its line is over-confident, above it under-confident; the diagonal is
    perfect calibration), and each bin's pixel count below (log scale)."""
    plt = pyplot()
    bins = len(stats["bin_count"])
    edges = [i / bins for i in range(bins)]
    width = 1 / bins
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    acc = [0.0 if math.isnan(a) else a for a in stats["bin_accuracy"]]
    conf = [0.0 if math.isnan(c) else c for c in stats["bin_confidence"]]
    top.bar(edges, acc, width=width, align="edge", edgecolor="black", label="accuracy")
    used = [i for i, n in enumerate(stats["bin_count"]) if n]
    top.hlines(  # the bin's mean confidence: the bar should reach it
        [conf[i] for i in used],
        [edges[i] for i in used],
        [edges[i] + width for i in used],
        colors="tab:red",
        linewidth=2,
        label="mean confidence",
    )
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"{title}\nECE {stats['ece']:.4f}, NLL {stats['nll']:.4f}")
    bottom.bar(edges, stats["bin_count"], width=width, align="edge", edgecolor="black")
    if any(stats["bin_count"]):
        bottom.set_yscale("log")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top class probability)")
    bottom.set_ylabel("pixels")
    fig.tight_layout()
    return fig

"""The paired bootstrap over images (Efron & Tibshirani 1993), in NumPy.

One resample draws the evaluated images with replacement; the same draw is used for every
run, so two models are always compared on the same images (pairing: the spread of image
difficulty cancels out of the difference). A resample's figures are those of the summed
confusion matrix of the drawn images, by ``seglab.metrics.metrics_from_confmat``'s rules
(IoU undefined when a class is in neither label nor prediction, and left out of mIoU). A
configuration trained with several seeds also has its seeds drawn with replacement in each
resample (hierarchical bootstrap); its figure is the mean over the drawn seeds.

Everything is vectorised: a run's per-image confusion matrices reduce to per-image counts
of true positives, label pixels and predicted pixels per class, and a resample's sums are
one matrix product of the images' multiplicities with those counts.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

RESAMPLES, SEED, CONFIDENCE = 1000, 0, 0.95
# Resampling one image always draws that image: no spread to measure.
MIN_IMAGES = 2


def confmat_counts(confmat: np.ndarray) -> np.ndarray:
    """Per-image counts ``(3, N, C)``: true positives, label pixels (row sums) and predicted
    pixels (column sums) of each class, from confusion matrices ``(N, C, C)`` (rows: label)."""
    cm = np.asarray(confmat, dtype=np.float64)
    return np.stack([np.diagonal(cm, axis1=1, axis2=2), cm.sum(axis=2), cm.sum(axis=1)])


def _nanmean(x: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():  # all-NaN slices are NaN, as torch's nanmean gives
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def metrics_from_counts(tp: np.ndarray, label: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """mIoU, aAcc and per-class IoU from summed counts ``(..., C)``, by
    ``metrics_from_confmat``'s rules; any leading axes (resamples, seeds) are kept."""
    union = label + pred - tp
    iou = np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)
    total = label.sum(axis=-1)
    aacc = np.where(total > 0, tp.sum(axis=-1) / np.where(total > 0, total, 1.0), np.nan)
    return {"miou": _nanmean(iou, axis=-1), "aacc": aacc, "iou": iou}


def image_weights(n_images: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each image is drawn in each resample, ``(resamples, n_images)``: image
    indices drawn uniformly with replacement, ``n_images`` per resample."""
    idx = rng.integers(0, n_images, size=(resamples, n_images))
    rows = np.arange(resamples)[:, None] * n_images
    counts = np.bincount((rows + idx).ravel(), minlength=resamples * n_images)
    return counts.reshape(resamples, n_images).astype(np.float64)


def resampled_metrics(counts: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    """A run's figures in every resample: ``counts`` from ``confmat_counts``, ``weights``
    ``(B, N)`` -> ``miou`` / ``aacc`` ``(B,)`` and ``iou`` ``(B, C)``."""
    return metrics_from_counts(weights @ counts[0], weights @ counts[1], weights @ counts[2])


def summed_metrics(confmat: np.ndarray) -> dict[str, Any]:
    """A run's figures on all its images: those of the sum of its confusion matrices."""
    tp, label, pred = confmat_counts(confmat).sum(axis=1)
    return metrics_from_counts(tp, label, pred)


def _mean_over_drawn_seeds(values: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """``values`` ``(S, B, ...)`` (seed s in resample b); ``draws`` ``(B, S)`` seed indices ->
    the mean over each resample's drawn seeds, ``(B, ...)``."""
    picked = values[draws, np.arange(draws.shape[0])[:, None]]  # (B, S, ...)
    return _nanmean(picked, axis=1)


def bootstrap(
    groups: Sequence[Sequence[np.ndarray]],
    resamples: int = RESAMPLES,
    seed: int | None = SEED,
) -> list[dict[str, Any]]:
    """The hierarchical paired bootstrap of several configurations.

    ``groups``: per configuration, one ``(N, C, C)`` confusion-matrix array per seed, all
    over the same N images in the same order. Returns per configuration ``point`` (its
    figures on all images: the mean over seeds), ``per_seed`` (each seed's figures) and
    ``samples`` (its figures in each of the ``resamples`` resamples: ``miou`` / ``aacc``
    ``(B,)``, ``iou`` ``(B, C)``). The images drawn are the same for every configuration; the
    seeds are drawn within each configuration (when it has more than one)."""
    if not groups or any(not g for g in groups):
        raise ValueError("every configuration needs at least one run")
    n_images = groups[0][0].shape[0]
    if n_images < MIN_IMAGES:
        raise ValueError(f"{n_images} image: a bootstrap over images needs at least {MIN_IMAGES}")
    rng = np.random.default_rng(seed)
    weights = image_weights(n_images, resamples, rng)
    out = []
    for runs in groups:
        counts = [confmat_counts(cm) for cm in runs]
        per_seed = [metrics_from_counts(*c.sum(axis=1)) for c in counts]
        resampled = [resampled_metrics(c, weights) for c in counts]
        if len(runs) == 1:
            samples = resampled[0]
        else:
            draws = rng.integers(0, len(runs), size=(resamples, len(runs)))
            samples = {
                k: _mean_over_drawn_seeds(np.stack([r[k] for r in resampled]), draws)
                for k in ("miou", "aacc", "iou")
            }
        point = {k: _nanmean(np.stack([m[k] for m in per_seed]), axis=0) for k in per_seed[0]}
        out.append({"point": point, "per_seed": per_seed, "samples": samples})
    return out


def percentile_interval(samples: np.ndarray, confidence: float = CONFIDENCE) -> np.ndarray:
    """The percentile interval over the first axis: ``(2, ...)`` low and high; NaN where
    every resample is undefined (resamples where a figure is undefined are left out)."""
    tail = 50.0 * (1.0 - confidence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanpercentile(samples, [tail, 100.0 - tail], axis=0)


def summary(point: float, samples: np.ndarray, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """A figure with its interval, as plain floats (None where undefined)."""
    low, high = percentile_interval(np.asarray(samples), confidence)
    return {"value": _float(point), "low": _float(low), "high": _float(high)}


def _float(v: Any) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def pick(result: dict[str, Any], metric: str, class_names: Sequence[str]) -> tuple[Any, Any]:
    """``miou``, ``aacc`` or ``iou/<class>`` of one ``bootstrap`` result: (point, samples)."""
    if metric in ("miou", "aacc"):
        return result["point"][metric], result["samples"][metric]
    if metric.startswith("iou/") and metric[4:] in class_names:
        i = list(class_names).index(metric[4:])
        return result["point"]["iou"][i], result["samples"]["iou"][:, i]
    raise ValueError(f"no bootstrap for the metric {metric!r} (miou, aacc or iou/<class>)")


def paired_difference(
    confmat_a: np.ndarray,
    confmat_b: np.ndarray,
    metric: str,
    class_names: Sequence[str],
    resamples: int = RESAMPLES,
    seed: int | None = SEED,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """``metric`` of a minus that of b, two runs on the same images (``(N, C, C)`` each),
    with its paired bootstrap interval: ``{"value", "low", "high"}``."""
    ra, rb = bootstrap([[confmat_a], [confmat_b]], resamples, seed)
    (pa, sa), (pb, sb) = pick(ra, metric, class_names), pick(rb, metric, class_names)
    return summary(pa - pb, sa - sb, confidence)

"""The verdict logic: a run's metrics as checks see them, one check of conf/reproduce.yaml on
those metrics, a finding's verdict from its checks, and the verdict of a difference from its
interval, shared with ``src/compare.py`` (``seglab.comparison``).

A check is ``pass``, ``contradicted`` or ``inconclusive``; a finding is ``contradicted`` when a
counted check is, ``confirmed`` when every counted check passes, else ``not confirmed at this
budget`` (conf/reproduce.yaml documents the kinds of check). A difference with an interval is
``better``, ``worse`` or ``no difference on this data`` (``interval_verdict``); the
reproduction report's ``better`` / ``not_worse`` checks show it beside their status when both
runs saved per-image confusion matrices (docs/numbers.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from seglab.comparison.runs import check_same_images, read_per_image
from seglab.comparison.stats import CONFIDENCE, paired_difference
from seglab.errors import InputError

CONFIRMED, NOT_CONFIRMED, CONTRADICTED = "confirmed", "not confirmed at this budget", "contradicted"
PASS, CONTRA, INCONCLUSIVE = "pass", "contradicted", "inconclusive"
BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no difference on this data"
# The file of per-image confusion matrices a run's final validation writes.
PER_IMAGE_VAL = "per_image_val.npz"


def interval_verdict(low: float | None, high: float | None) -> str | None:
    """The verdict of a difference (new - reference) from its interval: ``better`` when the
    interval lies entirely above 0, ``worse`` entirely below 0, ``no difference on this
    data`` when it contains 0; None when the interval is undefined."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return None
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return NO_DIFFERENCE


def interval_rule(confidence: float = CONFIDENCE) -> str:
    """The sentence both reports print to say how ``interval_verdict`` decides."""
    pct = f"{100 * confidence:g}%"
    return (
        f"A difference is **{BETTER}** when its {pct} paired bootstrap interval lies entirely "
        f"above 0, **{WORSE}** when it lies entirely below 0, and **{NO_DIFFERENCE}** when it "
        "contains 0: the images evaluated cannot tell the two apart, which is not a proof "
        "that they are equal (docs/numbers.md)."
    )


def fmt_signed(v: float | None, digits: int = 3) -> str:
    """A difference with its sign, ``-`` when undefined."""
    return "-" if v is None or not math.isfinite(v) else f"{v:+.{digits}f}"


def fmt_interval(d: dict[str, Any], digits: int = 3) -> str:
    """``{"value", "low", "high"}`` as ``+0.012 [-0.003, +0.027]``."""
    if d.get("value") is None:
        return "-"
    lo, hi = fmt_signed(d.get("low"), digits), fmt_signed(d.get("high"), digits)
    return f"{fmt_signed(d['value'], digits)} [{lo}, {hi}]"


def fmt(v: Any, digits: int = 3) -> str:
    """A figure for the report: ``-`` when missing, thousands without decimals."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, int) or (isinstance(v, float) and abs(v) >= 1e5):
        return f"{v:,.0f}"
    if abs(v) >= 100:  # megabytes, seconds: no decimals needed
        digits = 0
    return f"{v:.{digits}f}"


def derived_metrics(result: dict[str, Any]) -> dict[str, float | None]:
    """The metrics checks refer to: miou, iou/<c>, precision/<c>, recall/<c>,
    trivial_iou/<c> (IoU of predicting c everywhere), plus speed, memory and size."""
    m = result["metrics"]
    cm = np.asarray(m["val/confusion_matrix"], dtype=np.float64)
    total = cm.sum()
    out: dict[str, float | None] = {"miou": m.get("val/miou"), "aacc": m.get("val/aacc")}
    for i, c in enumerate(result["class_names"]):
        tp, label_n, pred_n = cm[i, i], cm[i].sum(), cm[:, i].sum()
        out[f"iou/{c}"] = m.get(f"val/iou/{c}")
        out[f"precision/{c}"] = tp / pred_n if pred_n else None
        out[f"recall/{c}"] = tp / label_n if label_n else None
        out[f"trivial_iou/{c}"] = label_n / total if total else None
    for key in ("img_per_s", "peak_mb", "params", "gflops", "bf", "wall_s"):
        out[key] = result.get(key)
    per_image = Path(result["dir"]) / PER_IMAGE_VAL if result.get("dir") else None
    out["per_image"] = str(per_image) if per_image and per_image.is_file() else None
    return out


def paired_interval(
    check: dict[str, Any], values: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The paired bootstrap interval of a - b for a ``better`` / ``not_worse`` check on
    miou, aacc or iou/<class> when both runs saved per-image confusion matrices (read from
    the files ``derived_metrics`` found), with its verdict; None when there is none to give,
    ``{"error": why}`` when the files cannot be paired."""
    metric = check["metric"]
    if metric not in ("miou", "aacc") and not metric.startswith("iou/"):
        return None
    files = [values.get(check[k], {}).get("per_image") for k in ("a", "b")]
    if not all(files):
        return None
    try:
        a, b = (read_per_image(Path(f)) for f in files)
        check_same_images({check["a"]: a, check["b"]: b})
        d = paired_difference(a["confmat"], b["confmat"], metric, list(a["class_names"]))
    except (InputError, OSError, ValueError, KeyError) as err:
        return {"error": str(err)}
    return {
        **d,
        "images": int(a["confmat"].shape[0]),
        "verdict": interval_verdict(d["low"], d["high"]),
    }


def _interval_detail(check: dict[str, Any], found: dict[str, Any]) -> str:
    if "error" in found:
        return f"; no paired interval ({found['error']})"
    pct = f"{100 * CONFIDENCE:g}%"
    return (
        f"; paired bootstrap over {found['images']} images: {check['a']} - {check['b']} = "
        f"{fmt_interval(found)} ({pct} interval): {found['verdict']}"
    )


def _one_run_check(check: dict[str, Any], values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``above_trivial`` and ``at_least``: one run against a bar (they never contradict)."""
    run = check["run"]
    if check["kind"] == "above_trivial":
        c = check["class"]
        got = values.get(run, {}).get(f"iou/{c}")
        base = values.get(run, {}).get(f"trivial_iou/{c}")
        if got is None or base is None:
            return {"status": INCONCLUSIVE, "detail": f"{run}: IoU of {c} not available"}
        need = base + check["margin"]
        status = PASS if got >= need else INCONCLUSIVE
        detail = (
            f"{run} IoU({c}) = {got:.3f} vs {need:.3f} (predicting {c} everywhere: "
            f"{base:.3f}, + margin {check['margin']})"
        )
        return {"status": status, "detail": detail}
    metric = check["metric"]
    got = values.get(run, {}).get(metric)
    if got is None:
        return {"status": INCONCLUSIVE, "detail": f"{run}: {metric} not available"}
    status = PASS if got >= check["value"] else INCONCLUSIVE
    return {"status": status, "detail": f"{run} {metric} = {got:.3f} (needs >= {check['value']})"}


def _difference_rule(kind: str, check: dict[str, Any], va: float, vb: float) -> tuple[str, str]:
    """``better`` / ``not_worse``: status and rule of the difference a - b."""
    d, margin = va - vb, check["margin"]
    if kind == "better":
        status = PASS if d >= margin else CONTRA if -d >= margin else INCONCLUSIVE
        return status, f"difference {d:+.3f}; pass >= +{margin}, contradicted <= -{margin}"
    status = PASS if d >= -margin else CONTRA
    return status, f"difference {d:+.3f}; pass >= -{margin}, else contradicted"


def _ratio_rule(kind: str, check: dict[str, Any], va: float, vb: float) -> tuple[str, str]:
    """``ratio_at_most`` / ``ratio_at_least``: status and rule of the ratio a / b."""
    r, contra = va / vb, check.get("contra_ratio", 1.0)
    if kind == "ratio_at_most":
        lim = check["max_ratio"]
        status = PASS if r <= lim else CONTRA if r >= contra else INCONCLUSIVE
        return status, f"ratio {r:.3f}; pass <= {lim}, contradicted >= {contra}"
    lim = check["min_ratio"]
    status = PASS if r >= lim else CONTRA if r <= contra else INCONCLUSIVE
    return status, f"ratio {r:.3f}; pass >= {lim}, contradicted <= {contra}"


def evaluate_check(check: dict[str, Any], values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One check of conf/reproduce.yaml on the runs' metrics (``values``: run name ->
    ``derived_metrics``) -> ``{"status": ..., "detail": a sentence}``."""
    kind = check["kind"]
    if kind in ("above_trivial", "at_least"):
        return _one_run_check(check, values)
    a, b, metric = check["a"], check["b"], check["metric"]
    va, vb = values.get(a, {}).get(metric), values.get(b, {}).get(metric)
    if va is None or vb is None:
        missing = a if va is None else b
        return {"status": INCONCLUSIVE, "detail": f"{missing}: {metric} not available"}
    pair = f"{a} {metric} = {fmt(va)}, {b} = {fmt(vb)}"
    floor = check.get("floor")
    if floor is not None and max(va, vb) < floor:
        return {
            "status": INCONCLUSIVE,
            "detail": f"{pair}: both below the floor {floor} (too little training to compare)",
        }
    if kind in ("better", "not_worse"):
        status, rule = _difference_rule(kind, check, va, vb)
        found = paired_interval(check, values)
        if found is not None:
            detail = f"{pair}: {rule}{_interval_detail(check, found)}"
            return {"status": status, "detail": detail, "interval": found}
    elif kind in ("ratio_at_most", "ratio_at_least"):
        if vb == 0:
            return {"status": INCONCLUSIVE, "detail": f"{pair}: ratio undefined"}
        status, rule = _ratio_rule(kind, check, va, vb)
    else:
        raise ValueError(f"unknown check kind {kind!r}")
    return {"status": status, "detail": f"{pair}: {rule}"}


def verdict(checks: list[dict[str, Any]]) -> str:
    """A finding's verdict from its evaluated checks (those with ``counts: false`` do not
    vote)."""
    counted = [c for c in checks if c.get("counts", True)]
    if any(c["status"] == CONTRA for c in counted):
        return CONTRADICTED
    if counted and all(c["status"] == PASS for c in counted):
        return CONFIRMED
    return NOT_CONFIRMED

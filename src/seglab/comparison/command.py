"""``compare``: the runs of ``runs=[...]`` found and grouped, their per-image confusion
matrices loaded and checked, the bootstrap, then comparison.md / .json / .png in the run
folder and the table on the console."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from seglab.comparison.report import print_table, write_report
from seglab.comparison.runs import Configuration, choose_split, find_configurations, load_runs
from seglab.comparison.stats import MIN_IMAGES, bootstrap, summary
from seglab.errors import InputError
from seglab.reproduce.verdicts import interval_verdict

log = logging.getLogger(__name__)


def _with_verdict(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "verdict": interval_verdict(d["low"], d["high"])}


def _spread(per_seed: list[float]) -> float | None:
    """The standard deviation over seeds (sample, ddof=1); None for one seed."""
    vals = np.asarray(per_seed, dtype=np.float64)
    return float(np.std(vals, ddof=1)) if len(vals) > 1 and np.isfinite(vals).all() else None


def analyse(
    configs: Sequence[Configuration],
    data: dict[Path, dict[str, Any]],
    resamples: int,
    seed: int | None,
    confidence: float,
) -> list[dict[str, Any]]:
    """Per configuration: its figures (mean, std over seeds, interval) and, from the second
    on, its differences from the first (the reference) with intervals and verdicts."""
    names = data[configs[0].runs[0].path]["class_names"]
    groups = [[data[r.path]["confmat"] for r in c.runs] for c in configs]
    results = bootstrap(groups, resamples, seed)
    ref = results[0]
    rows = []
    for c, res in zip(configs, results, strict=True):
        point, samples = res["point"], res["samples"]
        row: dict[str, Any] = {
            "label": c.label,
            "runs": [str(r.path) for r in c.runs],
            "seeds": [r.seed for r in c.runs],
            "images": int(groups[0][0].shape[0]),
        }
        for m in ("miou", "aacc"):
            per_seed = [float(s[m]) for s in res["per_seed"]]
            row[m] = {
                **summary(point[m], samples[m], confidence),
                "std": _spread(per_seed),
                "per_seed": per_seed,
            }
        row["iou"] = {
            n: summary(point["iou"][i], samples["iou"][:, i], confidence)
            for i, n in enumerate(names)
        }
        if res is not ref:
            delta = {
                m: _with_verdict(
                    summary(point[m] - ref["point"][m], samples[m] - ref["samples"][m], confidence)
                )
                for m in ("miou", "aacc")
            }
            d_iou = samples["iou"] - ref["samples"]["iou"]
            d_point = point["iou"] - ref["point"]["iou"]
            delta["iou"] = {
                n: _with_verdict(summary(d_point[i], d_iou[:, i], confidence))
                for i, n in enumerate(names)
            }
            row["delta"] = delta
            row["verdict"] = delta["miou"]["verdict"]
        rows.append(row)
    return rows


def _settings(cfg: DictConfig) -> tuple[list[str], int, int | None, float]:
    if OmegaConf.is_missing(cfg, "runs") or not cfg.runs:
        raise InputError(
            "no runs to compare: give the run folders, the first being the reference, e.g. "
            "python src/compare.py runs=[outputs/2026-01-01/10-00-00-000000_1,outputs/...]"
        )
    runs = [cfg.runs] if isinstance(cfg.runs, str) else [str(r) for r in cfg.runs]
    resamples, conf = int(cfg.resamples), float(cfg.confidence)
    if resamples < 1:
        raise InputError(f"resamples must be a positive integer, got {resamples} (e.g. 1000)")
    if not 0 < conf < 1:
        raise InputError(f"confidence must lie between 0 and 1, got {conf} (e.g. 0.95)")
    seed = None if cfg.get("seed") is None else int(cfg.seed)
    return runs, resamples, seed, conf


def compare(cfg: DictConfig) -> dict[str, Any]:
    """Compares the runs of ``cfg.runs`` (the first is the reference) and writes
    comparison.md, comparison.json and comparison.png into ``cfg.paths.output_dir``;
    returns what comparison.json holds."""
    runs, resamples, seed, confidence = _settings(cfg)
    configs = find_configurations(runs, Path(str(cfg.paths.root_dir)))
    split = choose_split(configs, str(cfg.split))
    data = load_runs(configs, split)
    log.info(
        "comparing %d configurations (%d runs) on %s: %d resamples, seed %s",
        len(configs),
        len(data),
        split,
        resamples,
        seed,
    )
    first = data[configs[0].runs[0].path]
    if first["confmat"].shape[0] < MIN_IMAGES:
        raise InputError(
            f"the runs were evaluated on {first['confmat'].shape[0]} image of {split}: a "
            "bootstrap over images needs several (tens, for a useful interval); evaluate "
            "them on more images (e.g. data.val_subset=null)"
        )
    result = {
        "split": split,
        "images": int(first["confmat"].shape[0]),
        "class_names": first["class_names"],
        "resamples": resamples,
        "seed": seed,
        "confidence": confidence,
        "reference": configs[0].label,
        "configurations": analyse(configs, data, resamples, seed, confidence),
    }
    out = Path(str(cfg.paths.output_dir))
    write_report(result, out)
    print_table(result)
    log.info("comparison written to %s", out / "comparison.md")
    return result

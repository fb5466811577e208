"""``reproduce``: every chosen finding from training to verdict, then the report. A finding
is trained run by run, its best checkpoints predict, its checks are evaluated and its
figures drawn; the report is rewritten after each finding, so an interrupted run leaves one."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from seglab.errors import InputError, MissingFileError
from seglab.reproduce.figures import curves_figure, grid_figure, read_curves
from seglab.reproduce.markdown import write_report
from seglab.reproduce.prediction import predict_run
from seglab.reproduce.training import budget_plan, plan_overrides, quote, train_run
from seglab.reproduce.verdicts import derived_metrics, evaluate_check, verdict

log = logging.getLogger(__name__)


def _train_and_predict(
    name: str, spec: DictConfig, cfg: DictConfig, out: Path, res: dict[str, Any]
) -> dict[str, list | None] | None:
    """Trains and predicts every run of a finding into ``res["runs"]``; returns each run's
    grid rows (None for a failed run), or None when the data turned out to be missing."""
    root = res["root"]
    common = [str(o) for o in cfg.common_overrides]
    shared = [f"data.root={quote(root)}", *map(str, spec.overrides)]
    extra = [str(o) for o in cfg.extra_overrides]
    predictions: dict[str, list | None] = {}
    tol = spec.get("boundary_tolerance_px")
    for run in spec.runs:
        run_dir = out / "runs" / name / run.name
        overrides = [
            *common,
            *shared,
            *map(str, run.overrides),
            *plan_overrides(res["plan"]),
            *extra,
            f"paths.output_dir={quote(run_dir)}",
        ]
        entry: dict[str, Any] = {"label": run.label, "dir": str(run_dir), "overrides": overrides}
        res["runs"][run.name] = entry
        log.info("finding %s, run %s: training", name, run.name)
        try:
            entry.update(train_run(overrides))
        except FileNotFoundError as err:
            res["skipped"] = f"data not found at {root} ({err})"
            log.warning("finding %s skipped: %s", name, res["skipped"])
            return None
        except Exception as err:  # reported, the other runs go on
            log.exception("finding %s, run %s failed", name, run.name)
            entry["error"] = f"{type(err).__name__}: {err}"
            predictions[run.label] = None
            continue
        ckpt = entry["metrics"].get("best_checkpoint")
        try:
            if not ckpt:
                raise MissingFileError("no best checkpoint was written")
            pred = predict_run(ckpt, int(cfg.grid_images), tol)
            predictions[run.label] = pred.pop("grid")
            entry.update(pred)
        except Exception as err:
            log.exception("finding %s, run %s: predicting failed", name, run.name)
            entry["predict_error"] = f"{type(err).__name__}: {err}"
            predictions[run.label] = None
        entry["values"] = derived_metrics(entry)
        entry["curves"] = read_curves(run_dir)
    return predictions


def run_finding(name: str, spec: DictConfig, cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Trains, predicts, plots and checks one finding; returns what the report needs."""
    root = Path(str(cfg.data_roots[spec.data])).resolve()
    plan = budget_plan(spec, float(cfg.budget))
    res: dict[str, Any] = {"name": name, "root": str(root), "plan": plan, "runs": {}}
    if not root.exists():
        res["skipped"] = f"data not found at {root}"
        log.warning("finding %s skipped: %s", name, res["skipped"])
        return res
    start = time.perf_counter()
    predictions = _train_and_predict(name, spec, cfg, out, res)
    if predictions is None:
        return res
    res["seconds"] = time.perf_counter() - start

    values = {k: r.get("values", {}) for k, r in res["runs"].items()}
    res["checks"] = []
    for check in spec.checks:
        c = OmegaConf.to_container(check, resolve=True)
        c.update(evaluate_check(c, values))
        res["checks"].append(c)
    res["verdict"] = verdict(res["checks"])

    figures = out / "figures"
    first = next((r for r in res["runs"].values() if "palette" in r), None)
    res["curves_png"] = f"figures/{name}_curves.png"
    curves_figure(
        {r["label"]: r.get("curves", {"loss": {}, "miou": {}}) for r in res["runs"].values()},
        spec.title,
        figures / f"{name}_curves.png",
    )
    if first is not None:
        res["grid_png"] = f"figures/{name}_grid.png"
        grid_figure(
            predictions, first["palette"], first["ignore_index"], figures / f"{name}_grid.png"
        )
    return res


def reproduce(cfg: DictConfig) -> Path:
    """Runs the chosen findings and writes report.md / report.json / figures/ into
    ``cfg.paths.output_dir``; returns the report's path."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    unknown = [f for f in cfg.findings if f not in cfg.catalogue]
    if unknown:
        raise InputError(f"unknown findings {unknown}; choose from {list(cfg.catalogue)}")
    results = []
    for name in cfg.findings:
        results.append(run_finding(name, cfg.catalogue[name], cfg, out))
        # The report so far, so that an interrupted run still leaves one.
        write_report(cfg, results, out, time.perf_counter() - start, partial=True)
    return write_report(cfg, results, out, time.perf_counter() - start)

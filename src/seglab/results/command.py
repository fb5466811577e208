"""``results``: every recipe run and read back, then docs/results.md and its plots. The page
is rewritten after each recipe, so an interrupted run still leaves one.

The run records are kept beside the plots (``results/records.json``): a call that reruns some
recipes (or some variants) replaces those and keeps the others' measurements, so the hour-long
recipes need not be rerun to refresh a short one. Every run carries the command, hardware,
budget and date that measured it."""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from seglab.errors import InputError
from seglab.results.curves import curves_png
from seglab.results.plain_loop import PLAIN, benchmark_ratio, plain_curve
from seglab.results.runs import hardware, run_recipe
from seglab.results.table import results_markdown, run_curve

log = logging.getLogger(__name__)

RECORDS = "records.json"


def _command() -> str:
    """The command line that made the page (Hydra's overrides, else ``sys.argv``)."""
    try:
        args = list(HydraConfig.get().overrides.task)
    except Exception:
        args = sys.argv[1:]
    return shlex.join(["python", "src/results.py", *args])


def _pending(cfg: DictConfig, recipe: str) -> dict[str, Any]:
    info = cfg.recipe_info[recipe]
    target = OmegaConf.to_container(info.target) if info.get("target") else None
    return {"recipe": recipe, "dataset": info.dataset, "target": target, "variants": {}}


def add_plot(rec: dict[str, Any], figures: Path) -> None:
    """Draws the recipe's time-to-accuracy PNG from its runs' curves; sets ``rec["png"]``
    (relative to the page) when there was a curve to draw."""
    curves = {name: run_curve(run) for name, run in rec["variants"].items()}
    ratio = (rec.get("plain_loop") or {}).get("ratio")
    if ratio and "recipe" in rec["variants"]:
        curves[PLAIN] = plain_curve(rec["variants"]["recipe"], ratio)
    target = (rec.get("target") or {}).get("miou")
    if curves_png(curves, rec["recipe"], figures / f"{rec['recipe']}.png", target):
        rec["png"] = f"{figures.name}/{rec['recipe']}.png"


def load_records(path: Path) -> dict[str, dict[str, Any]]:
    """The earlier calls' records by recipe ({} when there are none)."""
    if not path.is_file():
        return {}
    return {r["recipe"]: r for r in json.loads(path.read_text())}


def merged(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A recipe's record after this call: this call's variant runs over the earlier ones (at
    the same budget; a new budget starts afresh). A recipe measured before and skipped or not
    run now keeps its measurements."""
    if not old or not old.get("variants"):
        return new
    if "skipped" in new or not new["variants"]:
        return old
    budgets = {run.get("budget") for run in [*old["variants"].values(), *new["variants"].values()]}
    if len(budgets) > 1:
        return new
    return {**old, **new, "variants": {**old["variants"], **new["variants"]}}


def results(cfg: DictConfig) -> Path:
    """Runs the chosen recipes (unless ``measure`` is false) and writes ``cfg.out`` with its
    plots in ``<folder of out>/results/``; returns the page's path."""
    unknown = [r for r in cfg.recipes if r not in cfg.recipe_info]
    if unknown:
        raise InputError(f"unknown recipes {unknown}; choose from {list(cfg.recipe_info)}")
    page = Path(cfg.out)
    figures = page.parent / "results"
    repo = Path(cfg.paths.root_dir).resolve()
    out = Path(cfg.paths.output_dir)
    refs = OmegaConf.to_container(cfg.references, resolve=True)
    earlier = load_records(figures / RECORDS)
    # Every known recipe in conf/results.yaml's order: this call's, and earlier calls' kept.
    records = {r: merged(earlier.get(r), _pending(cfg, r)) for r in cfg.recipe_info}
    for rec in records.values():  # earlier runs' plots, redrawn from their records
        add_plot(rec, figures)
    meta = {"command": _command(), "hardware": hardware(), "budget": float(cfg.budget)}
    for recipe in cfg.recipes if cfg.measure else []:
        log.info("recipe %s: running %s", recipe, list(cfg.variants))
        rec = run_recipe(cfg, recipe, out, repo)
        stamp = {
            "measured_by": meta["command"],
            "hardware": meta["hardware"],
            "budget": meta["budget"],
            "written": time.strftime("%Y-%m-%d %H:%M"),
        }
        for run in rec["variants"].values():
            run.update(stamp)
        if cfg.get("plain_loop") and "train_args" in rec:
            bench_dir = out / "runs" / recipe / "benchmark"
            plain = benchmark_ratio(repo, rec["train_args"], list(cfg.benchmark_args), bench_dir)
            rec["plain_loop"] = {**plain, **stamp}
        records[recipe] = merged(earlier.get(recipe), rec)
        add_plot(records[recipe], figures)
        _write(page, figures, list(records.values()), refs, meta)
    _write(page, figures, list(records.values()), refs, meta)
    log.info("results written to %s", page)
    return page


def _write(
    page: Path, figures: Path, records: list[dict], refs: list[dict], meta: dict[str, Any]
) -> None:
    figures.mkdir(parents=True, exist_ok=True)
    measured = [r for r in records if r["variants"]]
    (figures / RECORDS).write_text(json.dumps(measured, indent=1) + "\n")
    page.write_text(results_markdown(records, refs, meta))

"""``results``: every recipe run and read back, then docs/results.md and its plots. The page
is rewritten after each recipe, so an interrupted run still leaves one."""

from __future__ import annotations

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
from seglab.results.runs import hardware, run_recipe
from seglab.results.table import results_markdown

log = logging.getLogger(__name__)


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
    curves = {
        name: (run.get("time_split") or {}).get("curve") or []
        for name, run in rec["variants"].items()
    }
    target = (rec.get("target") or {}).get("miou")
    if curves_png(curves, rec["recipe"], figures / f"{rec['recipe']}.png", target):
        rec["png"] = f"{figures.name}/{rec['recipe']}.png"


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
    records = [_pending(cfg, r) for r in cfg.recipes]
    meta = {"command": _command(), "hardware": hardware(), "budget": float(cfg.budget)}
    for i, recipe in enumerate(cfg.recipes if cfg.measure else []):
        log.info("recipe %s: running %s", recipe, list(cfg.variants))
        records[i] = run_recipe(cfg, recipe, out, repo)
        add_plot(records[i], figures)
        meta["written"] = time.strftime("%Y-%m-%d %H:%M")
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(results_markdown(records, refs, meta))
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(results_markdown(records, refs, meta))
    log.info("results written to %s", page)
    return page

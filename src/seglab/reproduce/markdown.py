"""Writing the report: ``report.md`` (the summary, how verdicts are decided, then a section
per finding) and ``report.json`` (the same results as data)."""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from seglab.comparison.stats import RESAMPLES, SEED
from seglab.reproduce.verdicts import NOT_CONFIRMED, fmt, interval_rule

log = logging.getLogger(__name__)

HOW_VERDICTS_ARE_DECIDED = [
    "## How verdicts are decided",
    "",
    "Each finding lists checks (conf/reproduce.yaml, `catalogue.<finding>.checks`); a "
    "check compares this run's metrics and is `pass`, `contradicted` or `inconclusive`:",
    "",
    "- `better a b metric margin`: a - b >= margin passes, b - a >= margin contradicts.",
    "- `not_worse a b metric margin`: a >= b - margin passes, otherwise contradicts.",
    "- `ratio_at_most` / `ratio_at_least a b metric`: a / b at most max_ratio (at least "
    "min_ratio) passes; at least (at most) contra_ratio contradicts.",
    "- `above_trivial run class margin`: the class's IoU at least the IoU of predicting "
    "that class everywhere + margin passes (never contradicts).",
    "- `at_least run metric value`: passes when reached (never contradicts).",
    "- With a `floor`, a comparison where both values are below it is inconclusive "
    "(neither model learned enough to compare them).",
    "- `better` / `not_worse` on miou, aacc or iou/<class> also give, when both runs saved "
    "per-image confusion matrices, the paired bootstrap interval of a - b over the "
    f"validation images ({RESAMPLES} resamples of the images, seed {SEED}, as "
    "`python src/compare.py` computes it) and its verdict. " + interval_rule() + " It is "
    "shown beside the check; the check's status follows the margin rule above.",
    "",
    "A finding is **contradicted** when a counted check is contradicted, **confirmed** when "
    "every counted check passes, and **not confirmed at this budget** otherwise; checks "
    "marked `counts: false` are shown but do not vote. mIoU and per-class IoU are those "
    "of the best checkpoint (by val mIoU, chosen on the same validation images: an "
    "optimistic pick, alike for every run; the last epoch's mIoU is shown beside it). "
    "Small budgets mean few images and epochs: "
    "a verdict holds for this budget only.",
    "",
]


def command_line(script: str = "reproduce.py") -> str:
    """The command line that made a report (Hydra's overrides, else ``sys.argv``)."""
    try:
        args = list(HydraConfig.get().overrides.task)
    except Exception:
        args = sys.argv[1:]
    return " ".join([f"python src/{script}", *args])


def _header(cfg: DictConfig, seconds: float, partial: bool) -> list[str]:
    return [
        "# Reproduction report: the seed projects' findings with seglab",
        "",
        f"Command: `{command_line()}`  ",
        f"Total time: {seconds / 60:.1f} min (budget={cfg.budget}); "
        f"{'PARTIAL: still running or interrupted; ' if partial else ''}"
        f"written {time.strftime('%Y-%m-%d %H:%M:%S')}  ",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}, "
        f"torch {torch.__version__}, precision {cfg.precision}  ",
        "Every number below was measured in this run; runs' folders (metrics.json, best "
        "checkpoint, csv/metrics.csv, timing.json) are under `runs/<finding>/<run>/`.",
        "",
    ]


def _key_numbers(res: dict[str, Any], spec: DictConfig) -> str:
    """mIoU and every metric the finding's checks look at, run by run."""
    metrics = ["miou"]
    for c in spec.checks:
        m = c.get("metric") or (f"iou/{c['class']}" if c.get("class") else None)
        if m and m not in metrics:
            metrics.append(m)
    parts = []
    for name, r in res["runs"].items():
        v = r.get("values")
        if not v:
            parts.append(f"{name}: failed")
            continue
        parts.append(f"{name}: " + ", ".join(f"{m} {fmt(v.get(m))}" for m in metrics))
    return "; ".join(parts)


def _summary(cfg: DictConfig, results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Summary",
        "",
        "| finding | models | key numbers (val) | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for i, res in enumerate(results, 1):
        spec = cfg.catalogue[res["name"]]
        models = ", ".join(r.label for r in spec.runs)
        if "skipped" in res:
            lines.append(
                f"| {i}. {spec.title} | {models} | skipped: {res['skipped']} | "
                f"{NOT_CONFIRMED} (skipped) |"
            )
        else:
            lines.append(
                f"| {i}. {spec.title} | {models} | {_key_numbers(res, spec)} | "
                f"**{res['verdict']}** |"
            )
    return [*lines, ""]


def _plain_runs(res: dict[str, Any]) -> dict[str, Any]:
    """The runs of a finding for report.json: no palette, no confusion matrix."""
    out = {}
    for name, r in res.get("runs", {}).items():
        keep = {k: v for k, v in r.items() if k not in ("metrics", "palette")}
        if "metrics" in r:
            keep["metrics"] = {k: v for k, v in r["metrics"].items() if k != "val/confusion_matrix"}
        out[name] = keep
    return out


def write_report(
    cfg: DictConfig,
    results: list[dict[str, Any]],
    out: Path,
    seconds: float,
    partial: bool = False,
) -> Path:
    """Writes ``report.md`` and ``report.json`` into ``out`` (``partial``: more findings are
    still to come) and returns the path of ``report.md``."""
    lines = [*_header(cfg, seconds, partial), *_summary(cfg, results), *HOW_VERDICTS_ARE_DECIDED]
    for i, res in enumerate(results, 1):
        lines += _finding_section(i, res, cfg.catalogue[res["name"]], cfg)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    plain = [
        {k: v for k, v in r.items() if k != "runs"} | {"runs": _plain_runs(r)} for r in results
    ]
    (out / "report.json").write_text(json.dumps(plain, indent=2, default=str) + "\n")
    log.info("report written to %s", path)
    return path


def _setup(res: dict[str, Any], spec: DictConfig, cfg: DictConfig) -> list[str]:
    plan = res["plan"]
    return [
        f"Seed: {spec.seed}",
        "",
        "Seed's claim:",
        "",
        f"> {spec.claim}",
        "",
        f"Setup: {spec.setup}",
        "",
        f"Budget (budget={cfg.budget}): {plan['epochs']} epochs, validation every "
        f"{plan['val_every']}, "
        f"{'all' if plan['train_batches'] is None else plan['train_batches']} training "
        f"batches per epoch, "
        f"{'all' if plan['val_images'] is None else plan['val_images']} validation images; "
        f"data: `{res['root']}`.",
        "",
    ]


def _runs_table(runs: dict[str, Any], cfg: DictConfig) -> list[str]:
    lines = ["### Runs", "", "| run | model | overrides of src/train.py (finding's own) |"]
    lines += ["| --- | --- | --- |"]
    common = {str(o) for o in cfg.common_overrides}
    for name, r in runs.items():
        own = [o for o in r["overrides"] if o not in common]
        own = [o for o in own if not o.startswith(("paths.output_dir=", "data.root="))]
        lines.append(f"| {name} | {r['label']} | `{' '.join(own)}` |")
    return lines


def _results_table(runs: dict[str, Any]) -> list[str]:
    lines = [
        "### Results (validation)",
        "",
        "| run | mIoU (best ckpt) | mIoU (last epoch) | aAcc | BF | train img/s | peak MB | "
        "params (M) | GFLOPs/img | train images | time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in runs.items():
        v = r.get("values")
        if not v:
            lines.append(f"| {name} | failed: {r.get('error', '?')} | | | | | | | | | |")
            continue
        params = v.get("params")
        curve = r.get("curves", {}).get("miou") or {}
        last = curve[max(curve)] if curve else None
        lines.append(
            f"| {name} | {fmt(v['miou'])} | {fmt(last)} | {fmt(v['aacc'])} | "
            f"{fmt(v.get('bf'))} | "
            f"{fmt(v.get('img_per_s'), 2)} | {fmt(v.get('peak_mb'), 0)} | "
            f"{fmt(params / 1e6 if params else None, 2)} | {fmt(v.get('gflops'), 2)} | "
            f"{fmt(r.get('train_images'))} | {fmt(r.get('wall_s'), 0)} |"
        )
        if r.get("predict_error"):
            lines.append(f"| {name} | predicting failed: {r['predict_error']} | | | | | | | | | |")
    return lines


def _per_class_table(runs: dict[str, Any]) -> list[str]:
    names = next((r["class_names"] for r in runs.values() if "class_names" in r), [])
    if not names:
        return []
    lines = ["", "Per-class IoU (precision / recall):", ""]
    lines += ["| class | " + " | ".join(runs) + " |", "| --- |" + " ---: |" * len(runs)]
    for c in names:
        cells = []
        for r in runs.values():
            v = r.get("values") or {}
            cells.append(
                f"{fmt(v.get(f'iou/{c}'))} ({fmt(v.get(f'precision/{c}'), 2)} / "
                f"{fmt(v.get(f'recall/{c}'), 2)})"
            )
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def _checks_and_figures(res: dict[str, Any]) -> list[str]:
    lines = ["", "### Checks", ""]
    for c in res["checks"]:
        vote = "" if c.get("counts", True) else " (shown, does not vote)"
        lines.append(f"- **{c['status']}**{vote}: {c.get('what', c['kind'])}: {c['detail']}")
    lines += [
        "",
        "### Figures",
        "",
        "Learning curves (val mIoU and mean train loss per epoch, from csv/metrics.csv):",
        "",
        f"![learning curves]({res['curves_png']})",
        "",
    ]
    if res.get("grid_png"):
        lines += [
            "Validation images, ground truth and each run's prediction (best checkpoint; "
            "white: ignored):",
            "",
            f"![predictions]({res['grid_png']})",
            "",
        ]
    return lines


def _finding_section(i: int, res: dict[str, Any], spec: DictConfig, cfg: DictConfig) -> list[str]:
    """The report's section of one finding: claim, setup, runs, results, checks, figures."""
    lines = [f"## {i}. {spec.title}", "", *_setup(res, spec, cfg)]
    if "skipped" in res:
        lines += [f"skipped: {res['skipped']}", "", f"Verdict: {NOT_CONFIRMED} (skipped)", ""]
        return lines
    runs = res["runs"]
    lines += [*_runs_table(runs, cfg), "", *_results_table(runs), *_per_class_table(runs)]
    if spec.get("boundary_tolerance_px") is not None:
        n = next((r.get("bf_images") for r in runs.values() if r.get("bf_images")), 0)
        lines += [
            "",
            f"BF: boundary F-score (seglab.boundary.boundary_fscore), tolerance "
            f"{spec.boundary_tolerance_px} px at the validation size, mean over {n} images of "
            "the mean over the classes in each image's label.",
        ]
    lines += _checks_and_figures(res)
    lines += [f"Verdict: {res['verdict']}", ""]
    return lines

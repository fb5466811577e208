"""The reproduction report behind ``python src/reproduce.py`` (config: conf/reproduce.yaml).

For each finding of the catalogue: every run is a ``src/train.py`` config (the finding's
overrides on top of the common ones, scaled by ``budget``) trained in this process with
``seglab.pipeline.train``, into ``<report>/runs/<finding>/<run>/`` (metrics.json, the best
checkpoint, csv/metrics.csv, timing.json). Then the best checkpoints predict the validation
images (the grid, and the boundary F-score when the finding asks for it), the learning curves
are drawn from the CSV logs, the finding's checks are evaluated and ``report.md`` (plus
``report.json`` and ``figures/*.png``) is written into the report folder.

Verdict rules (the catalogue's ``checks``; conf/reproduce.yaml documents the kinds): a check
is ``pass``, ``contradicted`` or ``inconclusive``; a finding is ``contradicted`` when a
counted check is, ``confirmed`` when every counted check passes, else ``not confirmed at this
budget``. A finding whose data root does not exist is skipped.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

CONF = Path(__file__).resolve().parents[2] / "conf"
CONFIRMED, NOT_CONFIRMED, CONTRADICTED = "confirmed", "not confirmed at this budget", "contradicted"
PASS, CONTRA, INCONCLUSIVE = "pass", "contradicted", "inconclusive"


# ----------------------------------------------------------------------------- measuring
class EpochTimer(L.Callback):
    """Times every training step (forward, backward and optimizer step; data loading is
    outside) and writes ``timing.json`` into the run folder (``trainer.default_root_dir``)
    when training ends. ``img_per_s`` leaves the first step out (warm-up) when there are
    more."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, int]] = []
        self._start: float | None = None

    @staticmethod
    def _sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._start is None:
            return
        self._sync()
        self.steps.append((time.perf_counter() - self._start, int(batch["image"].shape[0])))
        self._start = None

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        timed = self.steps[1:] if len(self.steps) > 1 else self.steps
        seconds = sum(t for t, _ in timed)
        out = {
            "steps": len(self.steps),
            "images": sum(n for _, n in self.steps),
            "train_seconds": sum(t for t, _ in self.steps),
            "img_per_s": sum(n for _, n in timed) / seconds if seconds > 0 else None,
            "step_seconds": [round(t, 4) for t, _ in self.steps],
        }
        path = Path(trainer.default_root_dir) / "timing.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def compose_train(overrides: Sequence[str]) -> DictConfig:
    """src/train.py's config with these overrides, as @hydra.main would compose it (inside
    a running Hydra app, e.g. src/reproduce.py, with its search path; else from conf/)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=list(overrides))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def _quote(value: Any) -> str:
    """A value as a Hydra override string would quote it (paths with any characters)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def budget_plan(spec: DictConfig, budget: float) -> dict[str, Any]:
    """Epochs, validation interval, training batches per epoch and validation images of a
    finding at ``budget`` (each scaled and rounded, at least 1; epochs a multiple of the
    validation interval, so that the last epoch is validated)."""
    epochs = max(1, round(spec.epochs * budget))
    points = spec.get("val_points") or epochs
    val_every = max(1, epochs // points)
    epochs = val_every * math.ceil(epochs / val_every)

    def scaled(n: int | None) -> int | None:
        return None if n is None else max(1, round(n * budget))

    return {
        "epochs": epochs,
        "val_every": val_every,
        "train_batches": scaled(spec.get("train_batches")),
        "val_images": scaled(spec.get("val_images")),
    }


def _plan_overrides(plan: dict[str, Any]) -> list[str]:
    out = [
        f"++trainer.max_epochs={plan['epochs']}",
        "++trainer.min_epochs=1",
        f"++trainer.check_val_every_n_epoch={plan['val_every']}",
        f"data.val_subset={'null' if plan['val_images'] is None else plan['val_images']}",
    ]
    if plan["train_batches"] is not None:
        out.append(f"++trainer.limit_train_batches={plan['train_batches']}")
    return out


def train_run(overrides: Sequence[str]) -> dict[str, Any]:
    """Trains one run with seglab's pipeline; returns its metrics, wall time, training
    speed and peak memory (peak RSS of this process during the run minus RSS before it)."""
    from seglab import benchmark, pipeline

    cfg = compose_train(overrides)
    out_dir = Path(cfg.paths.output_dir)
    resettable = benchmark._reset_peak_rss()
    before = _rss_mb()
    start = time.perf_counter()
    metrics = pipeline.train(cfg)
    wall = time.perf_counter() - start
    peak = benchmark._peak_rss_mb() - before if resettable else None
    timing_file = out_dir / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    result = {
        "metrics": metrics,
        "wall_s": wall,
        "peak_mb": peak,
        "rss_before_mb": before,
        "img_per_s": timing.get("img_per_s"),
        "train_images": timing.get("images"),
        "class_names": list(cfg.data.class_names),
        "palette": [list(c) for c in cfg.data.palette],
        "ignore_index": int(cfg.data.ignore_index),
        "model": cfg.model.net._target_.rsplit(".", 1)[-1],
        "crop_size": int(cfg.data.crop_size),
        "in_channels": int(cfg.data.in_channels),
    }
    del cfg
    gc.collect()
    return result


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
    return out


# ---------------------------------------------------------------------------- predicting
def predict_run(
    ckpt_path: str | Path, grid_images: int, tolerance_px: float | None
) -> dict[str, Any]:
    """The best checkpoint on the run's validation images (the same fixed subset the run
    validated on): label maps of the first ``grid_images`` for the grid, the boundary F-score
    over all of them when ``tolerance_px`` is set, the net's parameters and forward GFLOPs."""
    from seglab import pipeline
    from seglab.benchmark import flops_per_image
    from seglab.config import build
    from seglab.metrics import boundary_fscore
    from seglab.module import logits_to_labels
    from seglab.visualize import denormalize

    ckpt = pipeline.load_checkpoint(ckpt_path)
    run = OmegaConf.create(ckpt["seglab_config"])
    module = pipeline.build_module(run, from_checkpoint=True)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    del ckpt
    data = run.data
    dataset = build(data).dataset("val")
    count = len(dataset) if tolerance_px is not None else min(grid_images, len(dataset))
    rows, scores = [], []
    with torch.inference_mode():
        for i in range(count):
            item = dataset[i]
            x = item["image"][None].float()
            labels = logits_to_labels(module.inferer(module.logits, x))[0]
            if tolerance_px is not None:
                scores.append(
                    float(
                        boundary_fscore(
                            labels,
                            item["mask"],
                            data.num_classes,
                            tolerance_px,
                            data.ignore_index,
                            reduction="none",
                        )[0]
                    )
                )
            if i < grid_images:
                image = denormalize(item["image"], data.mean, data.std)
                rows.append((image, item["mask"].numpy(), labels.numpy()))
    finite = [s for s in scores if math.isfinite(s)]
    net = module.net.float()
    out = {
        "grid": rows,
        "bf": sum(finite) / len(finite) if finite else None,
        "bf_images": len(finite),
        "params": sum(p.numel() for p in net.parameters()),
        "gflops": flops_per_image(net, data.in_channels, int(data.crop_size)) / 1e9,
    }
    del module, net
    gc.collect()
    return out


# ------------------------------------------------------------------------------ checking
def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, int) or (isinstance(v, float) and abs(v) >= 1e5):
        return f"{v:,.0f}"
    if abs(v) >= 100:  # megabytes, seconds: no decimals needed
        digits = 0
    return f"{v:.{digits}f}"


def evaluate_check(check: dict[str, Any], values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One check of conf/reproduce.yaml on the runs' metrics -> status and a sentence."""
    kind = check["kind"]
    if kind == "above_trivial":
        run, c = check["run"], check["class"]
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
    if kind == "at_least":
        run, metric = check["run"], check["metric"]
        got = values.get(run, {}).get(metric)
        if got is None:
            return {"status": INCONCLUSIVE, "detail": f"{run}: {metric} not available"}
        status = PASS if got >= check["value"] else INCONCLUSIVE
        return {
            "status": status,
            "detail": f"{run} {metric} = {got:.3f} (needs >= {check['value']})",
        }

    a, b, metric = check["a"], check["b"], check["metric"]
    va, vb = values.get(a, {}).get(metric), values.get(b, {}).get(metric)
    if va is None or vb is None:
        missing = a if va is None else b
        return {"status": INCONCLUSIVE, "detail": f"{missing}: {metric} not available"}
    pair = f"{a} {metric} = {_fmt(va)}, {b} = {_fmt(vb)}"
    floor = check.get("floor")
    if floor is not None and max(va, vb) < floor:
        return {
            "status": INCONCLUSIVE,
            "detail": f"{pair}: both below the floor {floor} (too little training to compare)",
        }
    if kind in ("better", "not_worse"):
        d, margin = va - vb, check["margin"]
        if kind == "better":
            status = PASS if d >= margin else CONTRA if -d >= margin else INCONCLUSIVE
            rule = f"difference {d:+.3f}; pass >= +{margin}, contradicted <= -{margin}"
        else:
            status = PASS if d >= -margin else CONTRA
            rule = f"difference {d:+.3f}; pass >= -{margin}, else contradicted"
        return {"status": status, "detail": f"{pair}: {rule}"}
    if kind in ("ratio_at_most", "ratio_at_least"):
        if vb == 0:
            return {"status": INCONCLUSIVE, "detail": f"{pair}: ratio undefined"}
        r, contra = va / vb, check.get("contra_ratio", 1.0)
        if kind == "ratio_at_most":
            lim = check["max_ratio"]
            status = PASS if r <= lim else CONTRA if r >= contra else INCONCLUSIVE
            rule = f"ratio {r:.3f}; pass <= {lim}, contradicted >= {contra}"
        else:
            lim = check["min_ratio"]
            status = PASS if r >= lim else CONTRA if r <= contra else INCONCLUSIVE
            rule = f"ratio {r:.3f}; pass >= {lim}, contradicted <= {contra}"
        return {"status": status, "detail": f"{pair}: {rule}"}
    raise ValueError(f"unknown check kind {kind!r}")


def verdict(checks: list[dict[str, Any]]) -> str:
    counted = [c for c in checks if c.get("counts", True)]
    if any(c["status"] == CONTRA for c in counted):
        return CONTRADICTED
    if counted and all(c["status"] == PASS for c in counted):
        return CONFIRMED
    return NOT_CONFIRMED


# ------------------------------------------------------------------------------ plotting
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    """Per trained epoch (1-based): mean train loss and val mIoU, from the CSV log (the
    evaluation of the best checkpoint after training is left out)."""
    path = run_dir / "csv" / "metrics.csv"
    loss: dict[int, float] = {}
    miou: dict[int, float] = {}
    if not path.is_file():
        return {"loss": loss, "miou": miou}
    with path.open() as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            e = int(float(row["epoch"])) + 1
            if row.get("train/loss_epoch"):
                loss[e] = float(row["train/loss_epoch"])
            if row.get("val/miou") and e not in miou:
                miou[e] = float(row["val/miou"])
    return {"loss": loss, "miou": {e: v for e, v in miou.items() if e in loss}}


def curves_figure(curves: dict[str, dict[str, dict[int, float]]], title: str, path: Path) -> None:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, c in curves.items():
        if c["miou"]:
            ax1.plot(list(c["miou"]), list(c["miou"].values()), marker="o", label=label)
        if c["loss"]:
            ax2.plot(list(c["loss"]), list(c["loss"].values()), marker=".", label=label)
    ax1.set(xlabel="epoch", ylabel="val mIoU", title="validation mIoU")
    ax2.set(xlabel="epoch", ylabel="train loss (epoch mean)", title="training loss")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def grid_figure(
    columns: dict[str, list[tuple] | None],
    palette: Sequence[Sequence[int]],
    ignore_index: int,
    path: Path,
) -> None:
    """Rows: validation images; columns: image, ground truth, each run's prediction (the
    image and ground truth from the first run that has them; ignored pixels white)."""
    from seglab.visualize import colorize

    plt = _plt()
    base = next((rows for rows in columns.values() if rows), [])
    n_rows, n_cols = max(1, len(base)), 2 + len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.4 * n_cols, 2.0 * n_rows), squeeze=False)
    titles = ["image", "ground truth", *columns]
    for r in range(n_rows):
        panels: list[np.ndarray | None] = [None, None]
        if r < len(base):
            panels = [base[r][0], colorize(base[r][1], palette, ignore_index)]
        for rows in columns.values():
            ok = rows and r < len(rows)
            panels.append(colorize(rows[r][2], palette, ignore_index) if ok else None)
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                ax.text(0.5, 0.5, "no prediction", ha="center", va="center", fontsize=7)
            else:
                ax.imshow(panel, interpolation="nearest")
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------- running
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
    common = [str(o) for o in cfg.common_overrides]
    shared = [f"data.root={_quote(root)}", *map(str, spec.overrides)]
    extra = [str(o) for o in cfg.extra_overrides]
    predictions: dict[str, list | None] = {}
    tol = spec.get("boundary_tolerance_px")
    for run in spec.runs:
        run_dir = out / "runs" / name / run.name
        overrides = [
            *common,
            *shared,
            *map(str, run.overrides),
            *_plan_overrides(plan),
            *extra,
            f"paths.output_dir={_quote(run_dir)}",
        ]
        entry: dict[str, Any] = {"label": run.label, "dir": str(run_dir), "overrides": overrides}
        res["runs"][run.name] = entry
        log.info("finding %s, run %s: training", name, run.name)
        try:
            entry.update(train_run(overrides))
        except FileNotFoundError as err:
            res["skipped"] = f"data not found at {root} ({err})"
            log.warning("finding %s skipped: %s", name, res["skipped"])
            return res
        except Exception as err:  # reported, the other runs go on
            log.exception("finding %s, run %s failed", name, run.name)
            entry["error"] = f"{type(err).__name__}: {err}"
            predictions[run.label] = None
            continue
        ckpt = entry["metrics"].get("best_checkpoint")
        try:
            if not ckpt:
                raise FileNotFoundError("no best checkpoint was written")
            pred = predict_run(ckpt, int(cfg.grid_images), tol)
            predictions[run.label] = pred.pop("grid")
            entry.update(pred)
        except Exception as err:
            log.exception("finding %s, run %s: predicting failed", name, run.name)
            entry["predict_error"] = f"{type(err).__name__}: {err}"
            predictions[run.label] = None
        entry["values"] = derived_metrics(entry)
        entry["curves"] = read_curves(run_dir)
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


def _command() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        args = list(HydraConfig.get().overrides.task)
    except Exception:
        args = sys.argv[1:]
    return " ".join(["python src/reproduce.py", *args])


def reproduce(cfg: DictConfig) -> Path:
    """Runs the chosen findings and writes report.md / report.json / figures/ into
    ``cfg.paths.output_dir``; returns the report's path."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    unknown = [f for f in cfg.findings if f not in cfg.catalogue]
    if unknown:
        raise ValueError(f"unknown findings {unknown}; choose from {list(cfg.catalogue)}")
    results = []
    for name in cfg.findings:
        results.append(run_finding(name, cfg.catalogue[name], cfg, out))
        # The report so far, so that an interrupted run still leaves one.
        write_report(cfg, results, out, time.perf_counter() - start, partial=True)
    return write_report(cfg, results, out, time.perf_counter() - start)


# ------------------------------------------------------------------------------- writing
def _key_numbers(res: dict[str, Any], spec: DictConfig) -> str:
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
        parts.append(f"{name}: " + ", ".join(f"{m} {_fmt(v.get(m))}" for m in metrics))
    return "; ".join(parts)


def write_report(
    cfg: DictConfig, results: list[dict[str, Any]], out: Path, seconds: float, partial=False
) -> Path:
    lines = [
        "# Reproduction report: the seed projects' findings with seglab",
        "",
        f"Command: `{_command()}`  ",
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
    lines += [
        "",
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


def _plain_runs(res: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, r in res.get("runs", {}).items():
        keep = {k: v for k, v in r.items() if k not in ("metrics", "palette")}
        if "metrics" in r:
            keep["metrics"] = {k: v for k, v in r["metrics"].items() if k != "val/confusion_matrix"}
        out[name] = keep
    return out


def _finding_section(i: int, res: dict[str, Any], spec: DictConfig, cfg: DictConfig) -> list[str]:
    lines = [f"## {i}. {spec.title}", "", f"Seed: {spec.seed}", ""]
    lines += ["Seed's claim:", "", f"> {spec.claim}", ""]
    lines += [f"Setup: {spec.setup}", ""]
    plan = res["plan"]
    lines += [
        f"Budget (budget={cfg.budget}): {plan['epochs']} epochs, validation every "
        f"{plan['val_every']}, "
        f"{'all' if plan['train_batches'] is None else plan['train_batches']} training "
        f"batches per epoch, "
        f"{'all' if plan['val_images'] is None else plan['val_images']} validation images; "
        f"data: `{res['root']}`.",
        "",
    ]
    if "skipped" in res:
        lines += [f"skipped: {res['skipped']}", "", f"Verdict: {NOT_CONFIRMED} (skipped)", ""]
        return lines
    runs = res["runs"]
    lines += ["### Runs", "", "| run | model | overrides of src/train.py (finding's own) |"]
    lines += ["| --- | --- | --- |"]
    common = {str(o) for o in cfg.common_overrides}
    for name, r in runs.items():
        own = [o for o in r["overrides"] if o not in common]
        own = [o for o in own if not o.startswith(("paths.output_dir=", "data.root="))]
        lines.append(f"| {name} | {r['label']} | `{' '.join(own)}` |")
    lines += ["", "### Results (validation)", ""]
    lines += [
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
            f"| {name} | {_fmt(v['miou'])} | {_fmt(last)} | {_fmt(v['aacc'])} | "
            f"{_fmt(v.get('bf'))} | "
            f"{_fmt(v.get('img_per_s'), 2)} | {_fmt(v.get('peak_mb'), 0)} | "
            f"{_fmt(params / 1e6 if params else None, 2)} | {_fmt(v.get('gflops'), 2)} | "
            f"{_fmt(r.get('train_images'))} | {_fmt(r.get('wall_s'), 0)} |"
        )
        if r.get("predict_error"):
            lines.append(f"| {name} | predicting failed: {r['predict_error']} | | | | | | | | | |")
    names = next((r["class_names"] for r in runs.values() if "class_names" in r), [])
    if names:
        lines += ["", "Per-class IoU (precision / recall):", ""]
        lines += ["| class | " + " | ".join(runs) + " |", "| --- |" + " ---: |" * len(runs)]
        for c in names:
            cells = []
            for r in runs.values():
                v = r.get("values") or {}
                cells.append(
                    f"{_fmt(v.get(f'iou/{c}'))} ({_fmt(v.get(f'precision/{c}'), 2)} / "
                    f"{_fmt(v.get(f'recall/{c}'), 2)})"
                )
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if spec.get("boundary_tolerance_px") is not None:
        n = next((r.get("bf_images") for r in runs.values() if r.get("bf_images")), 0)
        lines += [
            "",
            f"BF: boundary F-score (seglab.metrics.boundary_fscore), tolerance "
            f"{spec.boundary_tolerance_px} px at the validation size, mean over {n} images of "
            "the mean over the classes in each image's label.",
        ]
    lines += ["", "### Checks", ""]
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
    lines += [f"Verdict: {res['verdict']}", ""]
    return lines

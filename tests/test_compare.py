"""``src/compare.py``: the paired bootstrap against NumPy and torch, its coverage on a known
model, seed groups, the report, bad input, the verdicts shared with the reproduction report,
and two real shapes runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_script_main, tiny_cfg
from seglab import pipeline
from seglab.comparison.command import compare
from seglab.comparison.stats import (
    bootstrap,
    confmat_counts,
    image_weights,
    paired_difference,
    resampled_metrics,
)
from seglab.errors import InputError, MissingFileError
from seglab.metrics import metrics_from_confmat
from seglab.reproduce.verdicts import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    derived_metrics,
    evaluate_check,
    interval_verdict,
)

NAMES = ["bg", "a", "b", "c"]


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Label pixels per image and class (n, 4); class 3 in no image."""
    labels = rng.integers(20, 300, size=(n, 4))
    labels[:, 3] = 0
    return labels


def _predict(rng: np.random.Generator, labels: np.ndarray, skill: float) -> np.ndarray:
    """Per-image confusion matrices (n, 4, 4) of a model right on a pixel with probability
    ``skill``, else wrong evenly among the other present classes (never class 3)."""
    p = np.full((4, 4), (1.0 - skill) / 2)
    np.fill_diagonal(p, skill)
    p[:, 3] = 0.0
    p[3] = [1.0, 0.0, 0.0, 0.0]  # no label pixels of class 3 anyway
    return rng.multinomial(labels, p[None])


def _write_run(folder: Path, confmat: np.ndarray, split: str = "val", names=NAMES) -> Path:
    """A run folder as train.py / eval.py leave it (interface 4 of per_image_<split>.npz)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        folder / f"per_image_{split}.npz",
        confmat=confmat,
        index=np.arange(len(confmat), dtype=np.int64),
        class_names=np.array(names),
    )
    metrics = {f"{split}/confusion_matrix": confmat.sum(0).tolist()}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def _numpy_metrics(cm: np.ndarray) -> tuple[float, float]:
    """mIoU and aAcc of one summed confusion matrix, written out independently."""
    ious = []
    for c in range(cm.shape[0]):
        tp, fn, fp = cm[c, c], cm[c].sum() - cm[c, c], cm[:, c].sum() - cm[c, c]
        if tp + fn + fp:
            ious.append(tp / (tp + fn + fp))
    return float(np.mean(ious)), float(np.trace(cm) / cm.sum())


def test_bootstrap_matches_metrics_from_confmat_and_self_comparison_is_zero():
    rng = np.random.default_rng(0)
    cm = _predict(rng, _labels(rng, 30), 0.6)
    torch_m = metrics_from_confmat(torch.from_numpy(cm.sum(0)))
    # Unresampled (every image once) = the summed matrix, by metrics_from_confmat's rules.
    ones = resampled_metrics(confmat_counts(cm), np.ones((1, len(cm))))
    (res,) = bootstrap([[cm]], resamples=50, seed=0)
    for m in (ones, res["point"]):
        assert np.squeeze(m["miou"]) == pytest.approx(float(torch_m["mIoU"]), abs=1e-12)
        assert np.squeeze(m["aacc"]) == pytest.approx(float(torch_m["aAcc"]), abs=1e-12)
        np.testing.assert_allclose(np.squeeze(m["iou"]), torch_m["IoU"].numpy(), atol=1e-12)
    assert np.isnan(res["point"]["iou"][3])  # absent class: undefined, not 0
    # A resample draws n image indices with replacement: weights sum to n.
    w = image_weights(30, 200, np.random.default_rng(1))
    assert w.shape == (200, 30) and (w.sum(axis=1) == 30).all() and w.max() > 1
    # A resample's mIoU is that of the summed drawn images (checked on a few).
    for b in range(3):
        drawn = (cm * w[b][:, None, None]).sum(0).astype(np.int64)
        expect = float(metrics_from_confmat(torch.from_numpy(drawn))["mIoU"])
        got = resampled_metrics(confmat_counts(cm), w[b : b + 1])["miou"][0]
        assert got == pytest.approx(expect, abs=1e-12)
    # A run against itself: difference 0, interval [0, 0], no difference.
    d = paired_difference(cm, cm, "miou", NAMES)
    assert d == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert interval_verdict(d["low"], d["high"]) == NO_DIFFERENCE
    assert interval_verdict(0.01, 0.2) == BETTER and interval_verdict(-0.3, -0.1) == WORSE
    assert interval_verdict(None, 0.1) is None
    # Seeded: the same draw twice.
    again = bootstrap([[cm]], resamples=50, seed=0)[0]["samples"]["miou"]
    np.testing.assert_array_equal(res["samples"]["miou"], again)


def _model_draw(rng, n_images, err_a, err_b):
    """Per-image confusion matrices of two models on the same images: label pixels from a
    Dirichlet mix (400 px per image), each image's difficulty d ~ Beta(2, 5) shared by both
    models; a pixel of class c is right with probability 1 - d * err[c], else wrong evenly."""
    c = len(err_a)
    counts = rng.multinomial(400, rng.dirichlet([3.0, 1.0, 1.0], size=n_images))  # (n, c)
    d = rng.beta(2.0, 5.0, size=n_images)
    out = []
    for err in (err_a, err_b):
        p = np.empty((n_images, c, c))
        for k in range(c):
            wrong = d * err[k]
            p[:, k, :] = (wrong / (c - 1))[:, None]
            p[:, k, k] = 1.0 - wrong
        out.append(rng.multinomial(counts, p))  # (n, c, c)
    return out


def _expected_miou(err, alpha=(3.0, 1.0, 1.0), mean_d=2.0 / 7.0):
    """The population mIoU: that of the expected confusion matrix (n and d independent)."""
    c = len(err)
    share = np.asarray(alpha) / sum(alpha)
    cm = np.empty((c, c))
    for k in range(c):
        cm[k, :] = share[k] * mean_d * err[k] / (c - 1)
        cm[k, k] = share[k] * (1 - mean_d * err[k])
    return _numpy_metrics(cm)[0]


def test_bootstrap_interval_covers_the_true_difference_about_95_percent():
    # Measured: 94.95% of 2000 repetitions (100 images each); 300 here: sd 1.3 points.
    err_a, err_b = (0.2, 0.9, 0.6), (0.15, 0.7, 0.8)
    truth = _expected_miou(err_b) - _expected_miou(err_a)
    rng = np.random.default_rng(2024)
    reps, covered, widths = 300, 0, []
    for rep in range(reps):
        a, b = _model_draw(rng, 100, err_a, err_b)
        d = paired_difference(b, a, "miou", ["x", "y", "z"], resamples=400, seed=rep)
        covered += d["low"] <= truth <= d["high"]
        widths.append(d["high"] - d["low"])
    assert 0.88 <= covered / reps <= 0.99, (covered, truth)
    # Pairing matters: unpaired (independent image draws) intervals are wider.
    a, b = _model_draw(rng, 100, err_a, err_b)
    ra, rb = bootstrap([[a]], 400, 0)[0], bootstrap([[b]], 400, 1)[0]
    unpaired = np.percentile(rb["samples"]["miou"] - ra["samples"]["miou"], [2.5, 97.5])
    assert unpaired[1] - unpaired[0] > 1.5 * np.median(widths)


def _sweep(folder: Path, jobs: list[tuple[str, int]], labels, rng) -> list[np.ndarray]:
    """A fake multirun folder: job k is ``optimizer.lr=<lr> seed=<seed>``."""
    cms = []
    for k, (lr, seed) in enumerate(jobs):
        cm = _predict(rng, labels, skill=float(lr) * 3)
        _write_run(folder / str(k), cm)
        (folder / str(k) / ".hydra").mkdir()
        overrides = f"- optimizer.lr={lr}\n- data.batch_size=8\n- seed={seed}\n"
        (folder / str(k) / ".hydra" / "overrides.yaml").write_text(overrides)
        cms.append(cm)
    (folder / "multirun.yaml").write_text("hydra: {}\n")
    return cms


def test_compare_groups_seeds_and_writes_the_report(tmp_path, make_cfg):
    rng = np.random.default_rng(5)
    labels = _labels(rng, 12)
    ref = _write_run(tmp_path / "ref", _predict(rng, labels, 0.2))
    jobs = [("0.2", 0), ("0.2", 1), ("0.3", 0), ("0.2", 2), ("0.3", 1)]
    cms = _sweep(tmp_path / "sweep", jobs, labels, rng)
    cfg = make_cfg("compare", f"runs=[{ref},{tmp_path / 'sweep'},{ref}]", "resamples=300")
    result = compare(cfg)
    out = Path(cfg.paths.output_dir)

    rows = result["configurations"]
    assert [r["label"] for r in rows] == [
        f"{ref} ({ref})",
        f"{tmp_path / 'sweep'} optimizer.lr=0.2",
        f"{tmp_path / 'sweep'} optimizer.lr=0.3",
        f"{ref} ({ref})",
    ]
    assert rows[1]["seeds"] == ["0", "1", "2"] and rows[2]["seeds"] == ["0", "1"]
    for row, members in ((rows[1], [0, 1, 3]), (rows[2], [2, 4])):
        per_seed = np.array([_numpy_metrics(cms[k].sum(0)) for k in members])
        assert row["miou"]["value"] == pytest.approx(per_seed[:, 0].mean(), abs=1e-12)
        assert row["miou"]["std"] == pytest.approx(per_seed[:, 0].std(ddof=1), abs=1e-12)
        assert row["aacc"]["std"] == pytest.approx(per_seed[:, 1].std(ddof=1), abs=1e-12)
        assert row["miou"]["low"] <= row["miou"]["value"] <= row["miou"]["high"]
        ref_miou = _numpy_metrics(np.load(ref / "per_image_val.npz")["confmat"].sum(0))[0]
        assert row["delta"]["miou"]["value"] == pytest.approx(row["miou"]["value"] - ref_miou)
        assert row["verdict"] == BETTER  # far more pixels on the diagonal
    assert rows[0]["miou"]["std"] is None and "delta" not in rows[0]
    # The reference against itself: nothing differs.
    same = rows[3]["delta"]
    assert same["miou"] == {"value": 0.0, "low": 0.0, "high": 0.0, "verdict": NO_DIFFERENCE}
    assert same["iou"]["c"]["value"] is None and same["iou"]["a"]["verdict"] == NO_DIFFERENCE

    saved = json.loads((out / "comparison.json").read_text())
    assert saved["split"] == "val" and saved["images"] == 12 and saved["resamples"] == 300
    assert saved["configurations"][1]["miou"] == rows[1]["miou"]  # JSON keeps every digit
    text = (out / "comparison.md").read_text()
    assert (
        "| run / configuration | seeds | images | mIoU | aAcc | ΔmIoU | ΔaAcc | verdict |" in text
    )
    assert f"{rows[1]['miou']['value']:.3f} ± {rows[1]['miou']['std']:.3f}" in text
    assert text.count("| better |") >= 2 and "no difference on this data" in text
    assert text.count("per-class IoU") == 3 and "![" in text
    assert (out / "comparison.png").stat().st_size > 10_000


def test_compare_bad_input_names_the_fix(tmp_path, make_cfg):
    rng = np.random.default_rng(3)
    cm = _predict(rng, _labels(rng, 6), 0.5)
    a = _write_run(tmp_path / "a", cm)

    def run(*paths, split="auto"):
        runs = ",".join(str(p) for p in paths)
        return compare(make_cfg("compare", f"runs=[{runs}]", f"split={split}"))

    with pytest.raises(MissingFileError, match="does not exist.*src/train.py or src/eval.py"):
        run(a, tmp_path / "gone")
    bare = tmp_path / "bare"
    (bare / "checkpoints").mkdir(parents=True)
    (bare / "checkpoints" / "epoch_003.ckpt").write_bytes(b"")
    (bare / "metrics.json").write_text("{}")
    with pytest.raises(InputError, match=r"no per-image.*python src/eval.py ckpt_path=.*epoch_003"):
        run(a, bare)
    other = cm.copy()
    other[2, 1, 0] += 5  # one more labelled pixel of class a in image 2
    with pytest.raises(InputError, match=r"different images \(different label pixels .*index 2\)"):
        run(a, _write_run(tmp_path / "b", other))
    with pytest.raises(InputError, match=r"different images \(6 vs 5 images\).*same split"):
        run(a, _write_run(tmp_path / "c", cm[:5]))
    with pytest.raises(InputError, match="no split in common.*split=val"):
        run(a, _write_run(tmp_path / "t", cm, split="test"))
    with pytest.raises(InputError, match="no per-image.*'test'"):
        run(a, tmp_path / "t", split="test")
    one = _write_run(tmp_path / "one", cm[:1])
    with pytest.raises(InputError, match="evaluated on 1 image of val.*needs several"):
        run(one, one)
    with pytest.raises(InputError, match="no runs to compare"):
        compare(make_cfg("compare"))


def test_reproduce_difference_checks_give_the_paired_interval(tmp_path):
    rng = np.random.default_rng(7)
    labels = _labels(rng, 15)
    weak, strong = _predict(rng, labels, 0.4), _predict(rng, labels, 0.8)
    values = {}
    for name, cm in (("strong", strong), ("weak", weak)):
        folder = tmp_path / name
        _write_run(folder, cm)
        m = metrics_from_confmat(torch.from_numpy(cm.sum(0)))
        metrics = {"val/confusion_matrix": cm.sum(0).tolist(), "val/miou": float(m["mIoU"])}
        result = {"metrics": metrics, "class_names": NAMES, "dir": str(folder)}
        values[name] = derived_metrics(result)
    assert values["weak"]["per_image"] == str(tmp_path / "weak" / "per_image_val.npz")
    check = {"kind": "better", "a": "strong", "b": "weak", "metric": "miou", "margin": 0.01}
    got = evaluate_check(check, values)
    assert got["status"] == "pass" and got["interval"]["verdict"] == BETTER
    assert "paired bootstrap over 15 images: strong - weak = +" in got["detail"]
    expect = paired_difference(strong, weak, "miou", NAMES)
    assert got["interval"]["low"] == expect["low"] and got["interval"]["high"] == expect["high"]
    reverse = evaluate_check({**check, "kind": "not_worse", "a": "weak", "b": "strong"}, values)
    assert reverse["status"] == "contradicted" and reverse["interval"]["verdict"] == WORSE
    # Metrics without per-image figures, or runs without the files: no interval.
    assert "interval" not in evaluate_check({**check, "metric": "precision/a"}, values)
    del values["weak"]["per_image"]
    assert "interval" not in evaluate_check(check, values)


def test_compare_calls_a_trained_shapes_model_better(tmp_path, monkeypatch, capsys):
    untrained = tiny_cfg(
        "train",
        ["trainer.max_epochs=1", "++trainer.limit_train_batches=1", "optimizer.lr=1e-7"],
        tmp_path / "untrained",
    )
    # Enough to learn at least the background (test mIoU 0.23 vs 0.01 of the untrained).
    good = ["trainer.max_epochs=4", "optimizer.lr=0.02", "scheduler=none"]
    trained = tiny_cfg("train", good, tmp_path / "trained")
    for cfg in (untrained, trained):
        pipeline.train(cfg)
    for run in ("untrained", "trained"):
        assert (tmp_path / run / "per_image_val.npz").is_file()
        assert (tmp_path / run / "per_image_test.npz").is_file()

    # src/compare.py's main, as the command line runs it (Hydra makes the run folder).
    args = [
        f"runs=[{tmp_path / 'untrained'},{tmp_path / 'trained'}]",
        f"paths.log_dir={tmp_path / 'out'}",
    ]
    code, printed = run_script_main("compare", args, capsys, monkeypatch)
    assert code == 0, printed
    (folder,) = (tmp_path / "out" / "compare").iterdir()
    saved = json.loads((folder / "comparison.json").read_text())
    assert saved["split"] == "test" and saved["images"] == 5  # auto: both runs have test
    better = saved["configurations"][1]
    assert better["verdict"] == BETTER, better["delta"]["miou"]
    metrics = json.loads((tmp_path / "trained" / "metrics.json").read_text())
    assert better["miou"]["value"] == pytest.approx(metrics["test/miou"], abs=1e-6)
    assert "better" in printed and (folder / "comparison.md").is_file()

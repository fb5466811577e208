"""The evaluation's boundary metrics against plain NumPy, and every new evaluation output
(calibration, boundary, per-image confusion matrices, reliability diagram) of a real run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from seglab import pipeline
from seglab.boundary import BoundaryStats, boundary_fscore, image_boundary_stats
from seglab.per_image import load_per_image, per_image_confmats

IGNORE = 255


# -- the NumPy references: loops over pixels, written from the papers' definitions ---------
def ref_band(mask: np.ndarray, d: int) -> np.ndarray:
    """Boundary IoU's band as the authors' code computes it: a 1-pixel zero border, then d
    erosions by a 3x3 square (pixels beyond the padded image do not erode)."""
    h, w = mask.shape
    m = np.zeros((h + 2, w + 2), dtype=bool)
    m[1:-1, 1:-1] = mask
    for _ in range(d):
        new = m.copy()
        for i in range(h + 2):
            for j in range(w + 2):
                for di in (-1, 0, 1):
                    for dj in (-1, 0, 1):
                        y, x = i + di, j + dj
                        if 0 <= y < h + 2 and 0 <= x < w + 2 and not m[y, x]:
                            new[i, j] = False
        m = new
    return mask & ~m[1:-1, 1:-1]


def ref_edges(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (the image border is no edge)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for i in range(h):
        for j in range(w):
            if mask[i, j]:
                for y, x in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
                    if 0 <= y < h and 0 <= x < w and not mask[y, x]:
                        out[i, j] = True
    return out


def ref_matched(a: np.ndarray, b: np.ndarray, tol: float) -> int:
    """How many pixels of ``a`` lie within Euclidean ``tol`` of a pixel of ``b``."""
    pb = np.argwhere(b)
    if len(pb) == 0:
        return 0
    return sum(int(np.min(np.hypot(*(pb - p).T)) <= tol) for p in np.argwhere(a))


def ref_image(pred: np.ndarray, label: np.ndarray, c: int, ratio: float, tol: float) -> dict:
    """Per class: band intersection / union (Boundary IoU) and BF (None: does not count)."""
    h, w = label.shape
    d = max(1, int(round(ratio * math.sqrt(h * h + w * w))))
    valid = label != IGNORE
    inter, union, bf = np.zeros(c, int), np.zeros(c, int), [None] * c
    for k in range(c):
        g, p = label == k, pred == k
        bg, bp = ref_band(g, d) & valid, ref_band(p, d) & valid
        inter[k], union[k] = np.sum(bg & bp), np.sum(bg | bp)
        if not g.any():
            continue
        eg, ep = ref_edges(g), ref_edges(p) & valid
        if not eg.any() and not ep.any():
            continue
        if not eg.any() or not ep.any():
            bf[k] = 0.0
            continue
        precision = ref_matched(ep, eg, tol) / ep.sum()
        recall = ref_matched(eg, ep, tol) / eg.sum()
        bf[k] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"inter": inter, "union": union, "bf": bf}


def two_images() -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction, label) pairs: objects on the image border, ignored pixels (inside an
    object, on the border), a class only predicted, a class absent from both."""
    label1 = np.zeros((12, 15), np.int64)
    label1[0:5, 3:9] = 1  # touches the top border
    label1[6:11, 9:15] = 2  # touches the right border
    label1[8:10, 11:13] = IGNORE  # ignored inside the object
    label1[11, 0:5] = IGNORE  # ignored on the bottom border
    pred1 = np.zeros_like(label1)
    pred1[0:6, 4:10] = 1
    pred1[7:12, 10:15] = 2
    pred1[8:10, 1:3] = 3  # class 3: predicted, never labelled
    label2 = np.zeros((10, 9), np.int64)
    label2[2:7, 2:7] = 3
    label2[0:2, 0:2] = IGNORE
    pred2 = np.zeros_like(label2)
    pred2[3:8, 1:6] = 3
    pred2[:, 8] = 1  # class 1: only predicted here
    return [(pred1, label1), (pred2, label2)]


def test_boundary_iou_and_bf_match_numpy_on_hand_made_masks():
    c, ratio, tol = 5, 0.1, 1.5  # d = 2 (12 x 15) and 1 (10 x 9); class 4 never occurs
    images = two_images()
    refs = [ref_image(p, t, c, ratio, tol) for p, t in images]
    assert refs[0]["union"][3] > 0 and refs[0]["inter"][3] == 0  # the only-predicted class

    # One image at a time.
    for (p, t), ref in zip(images, refs, strict=True):
        got = image_boundary_stats(torch.from_numpy(p), torch.from_numpy(t), c, IGNORE, ratio, tol)
        assert got["intersection"].tolist() == ref["inter"].tolist()
        assert got["union"].tolist() == ref["union"].tolist()
        assert got["bf_used"].tolist() == [b is not None for b in ref["bf"]]
        want = [b or 0.0 for b in ref["bf"]]
        np.testing.assert_allclose(got["bf"].numpy(), want, rtol=1e-12)
        image_bf = np.mean([b for b in ref["bf"] if b is not None])
        bf = boundary_fscore(torch.from_numpy(p), torch.from_numpy(t), c, tol, IGNORE)
        assert bf.item() == pytest.approx(image_bf, rel=1e-12)

    # Over the dataset: summed counts, per-class BF over images, the image mean of BF.
    inter = sum(r["inter"] for r in refs)
    union = sum(r["union"] for r in refs)
    biou = [i / u if u else math.nan for i, u in zip(inter, union, strict=True)]
    bf_class = [[r["bf"][k] for r in refs if r["bf"][k] is not None] for k in range(c)]
    bf_image = [np.mean([b for b in r["bf"] if b is not None]) for r in refs]
    assert math.isnan(biou[4]) and not bf_class[4]

    def check(stats: BoundaryStats) -> None:
        got = stats.compute()
        np.testing.assert_allclose(got["biou_per_class"], biou, rtol=1e-12, equal_nan=True)
        assert got["biou"] == pytest.approx(np.nanmean(biou), rel=1e-12)
        want = [np.mean(v) if v else math.nan for v in bf_class]
        np.testing.assert_allclose(got["bf_per_class"], want, atol=1e-7, equal_nan=True)
        assert got["bf"] == pytest.approx(np.mean(bf_image), abs=1e-7)  # fixed point 2**-24

    # Batches of one ...
    one = BoundaryStats(c, IGNORE, ratio, tol)
    for p, t in images:
        one.update(torch.from_numpy(p)[None], torch.from_numpy(t)[None])
    check(one)
    # ... and one padded batch (bottom / right, the label with ignore_index, the prediction
    # with a class: padding must not count), with and without the images' sizes.
    preds = torch.full((2, 12, 15), 2)
    labels = torch.full((2, 12, 15), IGNORE)
    for i, (p, t) in enumerate(images):
        preds[i, : p.shape[0], : p.shape[1]] = torch.from_numpy(p)
        labels[i, : t.shape[0], : t.shape[1]] = torch.from_numpy(t)
    padded, sized = BoundaryStats(c, IGNORE, ratio, tol), BoundaryStats(c, IGNORE, ratio, tol)
    padded.update(preds, labels)
    sized.update(preds, labels, torch.tensor([[12, 15], [10, 9]]))
    for stats in (padded, sized):
        check(stats)
        for state in ("intersection", "union", "bf_sum", "bf_images", "image_bf_sum"):
            assert torch.equal(getattr(stats, state), getattr(one, state)), state

    # The per-image confusion matrices of the same padded batch.
    confmats = per_image_confmats(preds, labels, c, IGNORE)
    for i, (p, t) in enumerate(images):
        keep = t != IGNORE
        want = np.zeros((c, c), np.int64)
        np.add.at(want, (t[keep], p[keep]), 1)
        assert confmats[i].tolist() == want.tolist()


def test_a_run_writes_every_evaluation_output_and_eval_can_turn_boundary_off(
    make_cfg, tmp_path, capsys
):
    run = tmp_path / "run"
    metrics = pipeline.train(make_cfg("train", "trainer.max_epochs=1"))
    printed = capsys.readouterr().out
    assert "BIoU" in printed and "ECE (%)" in printed and "Brier" in printed
    saved = json.loads((run / "metrics.json").read_text())
    names = ["background", "ellipse", "rectangle", "triangle", "star"]
    for stage in ("val", "test"):
        for key in ("ece", "nll", "brier", "mbiou", "mbf"):
            assert isinstance(saved[f"{stage}/{key}"], float), (stage, key)
        for name in names:
            assert f"{stage}/biou/{name}" in saved and f"{stage}/bf/{name}" in saved
        confmat = np.array(saved[f"{stage}/confusion_matrix"])
        rel = saved[f"{stage}/reliability"]
        assert len(rel["bin_count"]) == len(rel["bin_accuracy"]) == 15
        assert sum(rel["bin_count"]) == confmat.sum()  # every labelled pixel, once
        assert 0 <= saved[f"{stage}/ece"] <= 1 and 0 <= saved[f"{stage}/brier"] <= 2
        per_image = load_per_image(run / f"per_image_{stage}.npz")
        assert per_image["confmat"].sum(axis=0).tolist() == confmat.tolist()
        assert per_image["index"].tolist() == list(range({"val": 7, "test": 5}[stage]))
        assert per_image["class_names"].tolist() == names
        assert (run / f"reliability_{stage}.png").stat().st_size > 10_000
    assert metrics["val/mbiou"] == saved["val/mbiou"]
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert {"val/reliability", "test/reliability"} <= set(events.Tags()["images"])
    assert {"val/ece", "val/mbiou", "val/mbf", "val/bf/star"} <= set(events.Tags()["scalars"])

    # eval.py: its own evaluation group and temperature win over the checkpoint's.
    ckpt = saved["best_checkpoint"]
    off = pipeline.evaluate(
        make_cfg("eval", f"ckpt_path={ckpt}", "evaluation.boundary=false", "temperature=2", out="e")
    )
    assert not [k for k in off if "biou" in k or "bf" in k]
    assert off["val/confusion_matrix"] == saved["val/confusion_matrix"]  # labels unchanged
    assert off["val/nll"] != pytest.approx(saved["val/nll"])  # probabilities softened
    again = load_per_image(tmp_path / "e" / "per_image_val.npz")
    assert np.array_equal(again["confmat"], load_per_image(run / "per_image_val.npz")["confmat"])
    assert (tmp_path / "e" / "reliability_val.png").is_file()

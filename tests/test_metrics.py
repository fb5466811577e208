"""Metrics and losses against independent NumPy / PyTorch computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seglab.losses import BCEWithLogits, CrossEntropy, Dice, Focal, WeightedSum
from seglab.metrics import ConfusionMatrix, metrics_from_confmat, trivial_baselines


def numpy_reference(preds: np.ndarray, labels: np.ndarray, c: int, ignore: int) -> dict:
    """Per-class IoU/Acc by counting pixels directly, with the documented rules."""
    keep = labels != ignore
    p, t = preds[keep], labels[keep]
    iou, acc = [], []
    for k in range(c):
        tp = np.sum((p == k) & (t == k))
        fp = np.sum((p == k) & (t != k))
        fn = np.sum((p != k) & (t == k))
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
        acc.append(tp / (tp + fn) if tp + fn else np.nan)
    return {
        "IoU": np.array(iou),
        "Acc": np.array(acc),
        "mIoU": np.nanmean(iou),
        "mAcc": np.nanmean(acc),
        "aAcc": np.mean(p == t),
    }


def test_confusion_matrix_metrics_match_numpy_with_ignore_and_absent_classes():
    rng = np.random.default_rng(0)
    c, ignore = 6, 255
    cm = ConfusionMatrix(c, ignore)
    all_p, all_t = [], []
    for _ in range(4):  # several updates, as over batches
        t = rng.integers(0, c, size=(3, 17, 23))
        p = rng.integers(0, c, size=(3, 17, 23))
        # Class 4 occurs nowhere (neither label nor prediction); class 5 only in predictions.
        t[t == 4] = 0
        t[t == 5] = 1
        p[p == 4] = 2
        t[rng.random(t.shape) < 0.2] = ignore  # ignored pixels, predicted anything
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
        all_p.append(p)
        all_t.append(t)
    ref = numpy_reference(np.concatenate(all_p), np.concatenate(all_t), c, ignore)
    got = metrics_from_confmat(cm.compute())

    assert np.isnan(got["IoU"][4]) and np.isnan(ref["IoU"][4])  # absent: undefined, not 0
    assert got["IoU"][5] == 0.0  # predicted but never labelled: a real 0
    np.testing.assert_allclose(got["IoU"].numpy(), ref["IoU"], equal_nan=True)
    np.testing.assert_allclose(got["Acc"].numpy(), ref["Acc"], equal_nan=True)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert got[key].item() == pytest.approx(ref[key])
    # mIoU averages the 5 classes that occur (class 4 left out), so it is not sum / 6.
    assert got["mIoU"].item() == pytest.approx(np.nansum(ref["IoU"]) / 5)
    # The matrix counts exactly the labelled pixels.
    assert cm.compute().sum().item() == sum(int((t != ignore).sum()) for t in all_t)


def test_confusion_matrix_takes_logits_and_skips_out_of_range_labels():
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    target[0, 0, 0] = 7  # neither a class nor ignore_index: not counted
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(logits, target)
    b.update(logits.argmax(1), target)
    assert torch.equal(a.compute(), b.compute())
    assert a.compute().sum() == 2 * 64 - 1


def test_dice_per_class_matches_formula():
    cm = torch.tensor([[5, 1], [2, 2]])
    m = metrics_from_confmat(cm)
    assert m["Dice"][0].item() == pytest.approx(2 * 5 / (2 * 5 + 1 + 2))
    assert m["Dice"][1].item() == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert m["aAcc"].item() == pytest.approx(7 / 10)


def test_losses_respect_ignore_index_and_reference_formulas():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 6, requires_grad=True)
    target = torch.randint(0, 4, (2, 5, 6))
    target[:, 0] = 255
    ce = CrossEntropy(ignore_index=255)(logits, target)
    keep = target != 255
    ref = F.cross_entropy(logits.permute(0, 2, 3, 1)[keep], target[keep])
    assert ce.item() == pytest.approx(ref.item(), rel=1e-6)
    # Focal with gamma=0 is cross-entropy.
    assert Focal(ignore_index=255, gamma=0.0)(logits, target).item() == pytest.approx(ce.item())
    # Changing logits at ignored pixels changes nothing.
    changed = logits.detach().clone()
    changed[:, :, 0] += 100
    for loss in (CrossEntropy(), Dice(), Focal()):
        assert loss(changed, target).item() == pytest.approx(loss(logits, target).item(), rel=1e-5)
    # Perfect logits give Dice loss ~0; the weighted sum adds up.
    perfect = F.one_hot(target.clamp(max=3), 4).permute(0, 3, 1, 2).float() * 50
    assert Dice(smooth=0.0)(perfect, target).item() < 1e-4
    combo = WeightedSum([CrossEntropy(), Dice()], [1.0, 0.5])(logits, target)
    assert combo.item() == pytest.approx(ce.item() + 0.5 * Dice()(logits, target).item(), rel=1e-6)
    combo.backward()
    assert logits.grad is not None


def test_bce_for_single_channel_nets():
    logits = torch.randn(2, 1, 4, 4)
    target = torch.randint(0, 2, (2, 4, 4))
    target[0, 0, 0] = 255
    keep = target != 255
    ref = F.binary_cross_entropy_with_logits(logits[:, 0][keep], target[keep].float())
    assert BCEWithLogits()(logits, target).item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ValueError, match="single-channel"):
        BCEWithLogits()(torch.randn(2, 3, 4, 4), target)


def test_confusion_matrix_agrees_with_torchmetrics():
    """Same counts as torchmetrics' multiclass confusion matrix with ignore_index, and the
    same per-class IoU as its MulticlassJaccardIndex where the class occurs."""
    from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

    gen = torch.Generator().manual_seed(3)
    preds = torch.randint(0, 6, (3, 17, 23), generator=gen)
    target = torch.randint(0, 6, (3, 17, 23), generator=gen)
    target[torch.rand(target.shape, generator=gen) < 0.2] = 255
    ours = ConfusionMatrix(6, 255)
    ours.update(preds, target)
    theirs = MulticlassConfusionMatrix(6, ignore_index=255)
    assert torch.equal(ours.compute(), theirs(preds, target).long())
    iou = MulticlassJaccardIndex(6, ignore_index=255, average="none")(preds, target)
    assert torch.allclose(metrics_from_confmat(ours.compute())["IoU"].float(), iou)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_trivial_baselines_match_numpy(num_classes):
    rng = np.random.default_rng(num_classes)
    label = rng.choice(
        num_classes,
        size=(3, 20, 30),
        p=np.linspace(1, 2, num_classes) / np.linspace(1, 2, num_classes).sum(),
    )
    label[:, :2] = 255  # ignored rows
    pred = rng.integers(0, num_classes, size=label.shape)
    cm = ConfusionMatrix(num_classes)
    cm.update(torch.as_tensor(pred), torch.as_tensor(label))
    baselines = trivial_baselines(cm.compute())

    valid = label != 255
    counts = np.bincount(label[valid], minlength=num_classes)

    def constant(cls: int) -> tuple[float, float]:
        ious = []
        for c in range(num_classes):
            tp = np.sum(valid & (label == c) & (c == cls))
            union = np.sum(valid & ((label == c) | (c == cls)))
            if union:
                ious.append(tp / union)
        return float(np.mean(ious)), float(counts[cls] / valid.sum())

    majority = int(np.argmax(counts))
    assert baselines["majority"]["class"] == majority
    assert (baselines["majority"]["miou"], baselines["majority"]["aacc"]) == pytest.approx(
        constant(majority)
    )
    if num_classes == 2:
        fg = baselines["all_foreground"]
        assert (fg["miou"], fg["aacc"]) == pytest.approx(constant(1))
    else:
        assert "all_foreground" not in baselines

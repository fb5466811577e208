"""Class imbalance beyond class weights: the OHEM cross-entropy (``loss=ohem``) against a NumPy
reference, and the class-balanced random crop (``cat_max_ratio``)."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from fixtures import make_voc
from seglab.config import build
from seglab.data.transforms import MAX_TRIES, BalancedRandomCrop, dominant_fraction
from seglab.errors import InputError
from seglab.losses import CrossEntropy, OhemCrossEntropy

IGNORE = 255


# --- OHEM cross-entropy -------------------------------------------------------------------


def _ohem_reference(logits, target, thresh, min_kept, weight=None):
    """OHEM written from its definition in float64 NumPy: the loss and the kept pixels."""
    x = logits.astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    prob = e / e.sum(axis=1, keepdims=True)
    valid = target != IGNORE
    safe = np.where(valid, target, 0)
    p_true = np.take_along_axis(prob, safe[:, None], axis=1)[:, 0]
    kept = valid & (p_true < thresh)
    k = min(min_kept, int(valid.sum()))
    if kept.sum() < k:
        kth = np.sort(p_true[valid])[k - 1]
        kept = valid & (p_true <= kth)
    w = np.ones(logits.shape[1]) if weight is None else np.asarray(weight, dtype=np.float64)
    wk = w[safe] * kept
    return float((wk * -np.log(p_true)).sum() / wk.sum()), kept


def _batch(seed, n=2, c=4, h=12, w=10, confidence=0.0, ignore_share=0.2):
    """Random logits and labels with some ignore pixels; ``confidence`` adds to the true
    class's logit, making most pixels easy."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, c, size=(n, h, w))
    logits = rng.normal(size=(n, c, h, w)) * 2
    logits += confidence * np.moveaxis(np.eye(c)[target], -1, 1)
    target[rng.random((n, h, w)) < ignore_share] = IGNORE
    return logits.astype(np.float32), target


@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5, 3.0]])
def test_ohem_threshold_branch_matches_reference(weight):
    logits, target = _batch(0)
    loss_fn = OhemCrossEntropy(ignore_index=IGNORE, weight=weight, thresh=0.7, min_kept=10)
    ref, kept = _ohem_reference(logits, target, 0.7, 10, weight)
    assert 10 < kept.sum() < (target != IGNORE).sum()  # the threshold alone decides
    lt, tt = torch.from_numpy(logits), torch.from_numpy(target)
    assert torch.equal(loss_fn.hard_pixels(lt, tt), torch.from_numpy(kept))
    assert loss_fn(lt, tt).item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("weight", [None, [0.5, 1.0, 2.0, 1.5]])
def test_ohem_min_kept_branch_matches_reference(weight):
    logits, target = _batch(1, confidence=6.0)
    below = _ohem_reference(logits, target, 0.7, 0)[1].sum()
    min_kept = 120
    assert below < min_kept  # too few hard pixels: the threshold is raised
    ref, kept = _ohem_reference(logits, target, 0.7, min_kept, weight)
    assert kept.sum() == min_kept
    loss_fn = OhemCrossEntropy(ignore_index=IGNORE, weight=weight, thresh=0.7, min_kept=min_kept)
    lt, tt = torch.from_numpy(logits), torch.from_numpy(target)
    assert torch.equal(loss_fn.hard_pixels(lt, tt), torch.from_numpy(kept))
    assert not loss_fn.hard_pixels(lt, tt)[tt == IGNORE].any()
    assert loss_fn(lt, tt).item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("weight", [None, [1.0, 2.0, 0.5, 3.0]])
@pytest.mark.parametrize("thresh,min_kept", [(1.0, 0), (0.7, 10**9)])
def test_ohem_keeping_everything_is_plain_cross_entropy(weight, thresh, min_kept):
    """thresh=1 keeps every labelled pixel; so does a min_kept above their number."""
    logits, target = _batch(2)
    lt, tt = torch.from_numpy(logits), torch.from_numpy(target)
    ohem = OhemCrossEntropy(ignore_index=IGNORE, weight=weight, thresh=thresh, min_kept=min_kept)
    w = None if weight is None else torch.tensor(weight)
    plain = F.cross_entropy(lt, tt, weight=w, ignore_index=IGNORE)
    assert ohem(lt, tt).item() == pytest.approx(plain.item(), rel=1e-6)
    assert ohem(lt, tt).item() == pytest.approx(CrossEntropy(IGNORE, weight)(lt, tt).item())


def test_ohem_gradient_reaches_only_kept_pixels():
    logits, target = _batch(3)
    lt, tt = torch.from_numpy(logits).requires_grad_(), torch.from_numpy(target)
    loss_fn = OhemCrossEntropy(ignore_index=IGNORE, thresh=0.5, min_kept=0)
    loss_fn(lt, tt).backward()
    kept = loss_fn.hard_pixels(lt, tt)
    per_pixel = lt.grad.abs().sum(1)
    assert (per_pixel[kept] > 0).all() and (per_pixel[~kept] == 0).all()


def test_ohem_all_ignored_is_zero_with_a_graph():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    target = torch.full((1, 4, 4), IGNORE)
    loss = OhemCrossEntropy(ignore_index=IGNORE)(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("kwargs", [{"thresh": 0.0}, {"thresh": 1.5}, {"min_kept": -1}])
def test_ohem_rejects_bad_settings(kwargs):
    with pytest.raises(InputError, match="loss."):
        OhemCrossEntropy(**kwargs)


def test_ohem_config(make_cfg):
    cfg = make_cfg("train", "loss=ohem", "loss.min_kept=500")
    loss_fn = build(cfg.loss)
    assert isinstance(loss_fn, OhemCrossEntropy)
    assert (loss_fn.thresh, loss_fn.min_kept, loss_fn.ignore_index) == (0.7, 500, IGNORE)


# --- class-balanced random crop -----------------------------------------------------------


def _position_image(h, w):
    """An image whose pixels hold their own row and column, to read where a crop was taken."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)


def _dominated_mask():
    """64x64: class 0 around a 32x32 square of class 1, an ignored band on top. About 60% of
    the 16x16 crops hold over 75% of one class; the others straddle the square's border."""
    mask = np.zeros((64, 64), np.uint8)
    mask[20:52, 20:52] = 1
    mask[:6] = IGNORE
    return mask


def _crop(transform, seed, image, mask):
    transform.set_random_seed(seed)
    out = transform(image=image, mask=mask)
    return out["image"], out["mask"]


def test_dominant_fraction_ignores_ignored_pixels():
    mask = np.array([[0, 0, 1, 1], [IGNORE] * 4])
    assert dominant_fraction(mask, IGNORE) == 0.5
    assert dominant_fraction(np.full((2, 2), IGNORE), IGNORE) == 1.0


def test_balanced_crop_avoids_dominated_crops_and_crops_image_and_mask_alike():
    image, mask = _position_image(64, 64), _dominated_mask()
    balanced = A.Compose([BalancedRandomCrop(16, 16, cat_max_ratio=0.75, ignore_index=IGNORE)])
    plain = A.Compose([A.RandomCrop(16, 16)])
    good_balanced = good_plain = 0
    for seed in range(40):
        img, m = _crop(balanced, seed, image, mask)
        r0, c0 = int(img[0, 0, 0]), int(img[0, 0, 1])
        assert img.shape[:2] == m.shape == (16, 16)
        np.testing.assert_array_equal(img, image[r0 : r0 + 16, c0 : c0 + 16])
        np.testing.assert_array_equal(m, mask[r0 : r0 + 16, c0 : c0 + 16])
        good_balanced += dominant_fraction(m, IGNORE) <= 0.75
        good_plain += dominant_fraction(_crop(plain, seed, image, mask)[1], IGNORE) <= 0.75
    assert good_plain <= 20  # most plain crops are dominated...
    assert good_balanced == 40  # ...yet within MAX_TRIES a balanced one is always found


def test_balanced_crop_keeps_the_last_try_when_no_crop_passes():
    """Every crop of a single-class mask is dominated: MAX_TRIES crops, then the last one."""
    image, mask = _position_image(32, 32), np.ones((32, 32), np.uint8)
    crop = BalancedRandomCrop(8, 8, cat_max_ratio=0.75, ignore_index=IGNORE)
    crop.set_random_seed(7)
    out = crop(image=image, mask=mask)
    reference = BalancedRandomCrop(8, 8, cat_max_ratio=1.0)
    reference.set_random_seed(7)
    for _ in range(MAX_TRIES):
        last = reference(image=image, mask=mask)
    np.testing.assert_array_equal(out["image"], last["image"])


def test_balanced_crop_at_ratio_one_is_a_plain_random_crop():
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    mask = _dominated_mask()[:40, :50]
    balanced = A.Compose([BalancedRandomCrop(16, 24, cat_max_ratio=1.0)])
    plain = A.Compose([A.RandomCrop(16, 24)])
    for seed in range(5):
        a, b = _crop(balanced, seed, image, mask), _crop(plain, seed, image, mask)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"height": 8, "width": 8, "cat_max_ratio": 0.0}, "cat_max_ratio=0.0"),
        ({"height": 0, "width": 8}, "height=0"),
    ],
)
def test_balanced_crop_rejects_bad_settings(kwargs, match):
    with pytest.raises(InputError, match=match):
        BalancedRandomCrop(**kwargs)


def test_balanced_crop_larger_than_the_image_is_a_clear_error():
    crop = BalancedRandomCrop(40, 40)
    with pytest.raises(InputError, match="PadIfNeeded"):
        crop(image=np.zeros((32, 32, 3), np.uint8), mask=np.zeros((32, 32), np.uint8))


def test_balanced_crop_in_a_data_config(make_cfg, tmp_path):
    """In place of RandomCrop in a data config's train_transforms, as docs/datasets.md says."""
    root = make_voc(tmp_path / "data")
    cfg = make_cfg("train", "data=voc", f"data.root={root}", "data.crop_size=32")
    cfg.data.train_transforms[2] = OmegaConf.create(
        {
            "_target_": "seglab.data.transforms.BalancedRandomCrop",
            "height": "${data.crop_size}",
            "width": "${data.crop_size}",
            "cat_max_ratio": 0.75,
            "ignore_index": "${data.ignore_index}",
        }
    )
    dm = build(cfg.data)
    item = dm.dataset("train")[0]
    assert item["image"].shape[-2:] == (32, 32) and item["mask"].shape == (32, 32)

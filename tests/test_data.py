"""The built-in dataset, samplers and batching."""

from __future__ import annotations

import numpy as np
import torch

from seglab.data.collate import pad_collate
from seglab.data.samplers import SeededSampler, UnpaddedDistributedSampler
from seglab.data.shapes import ShapesDataset


def test_shapes_is_deterministic_varied_and_labelled_by_shape_only():
    a = ShapesDataset("train", num_samples=60, seed=3, min_size=48, max_size=72)
    b = ShapesDataset("train", num_samples=60, seed=3, min_size=48, max_size=72, cache=False)
    val = ShapesDataset("val", num_samples=60, seed=3, min_size=48, max_size=72)
    sizes, classes, colours = set(), set(), {c: [] for c in range(1, 5)}
    for i in range(60):
        (im, mask), (im2, mask2) = a.load(i), b.load(i)
        assert np.array_equal(im, im2) and np.array_equal(mask, mask2)  # same seed: same
        assert im.dtype == np.uint8 and im.shape == (*mask.shape, 3)
        assert 48 <= mask.shape[0] <= 72 and 48 <= mask.shape[1] <= 72
        sizes.add(mask.shape)
        classes |= set(np.unique(mask).tolist())
        for c in range(1, 5):
            if (mask == c).sum() > 20:
                colours[c].append(im[mask == c].mean(axis=0))
    assert classes == {0, 1, 2, 3, 4}
    assert len(sizes) > 10  # images vary in size
    assert not np.array_equal(a.load(0)[0], val.load(0)[0])  # splits differ
    # Colour says nothing about the class: every class's mean colour spans most of the range.
    for c, means in colours.items():
        means = np.stack(means)
        assert (means.max(0) - means.min(0)).min() > 120, f"class {c} colours are not random"


def test_seeded_sampler_depends_only_on_seed_and_epoch():
    data = list(range(10))
    s1, s2 = SeededSampler(data, seed=5), SeededSampler(data, seed=5)
    s1.set_epoch(3)
    s2.set_epoch(3)
    first = list(s1)
    assert first == list(s2)
    assert sorted(i for i, _ in first) == data
    s2.set_epoch(4)
    assert list(s2) != first
    # Two ranks partition the data.
    r0, r1 = SeededSampler(data, 2, 0, seed=5), SeededSampler(data, 2, 1, seed=5)
    assert sorted([i for i, _ in r0] + [i for i, _ in r1]) == data


def test_unpadded_sampler_sees_every_sample_exactly_once():
    data = list(range(7))
    shards = [list(UnpaddedDistributedSampler(data, 3, r)) for r in range(3)]
    assert sorted(sum(shards, [])) == data
    assert [len(s) for s in shards] == [3, 2, 2]
    assert [len(UnpaddedDistributedSampler(data, 3, r)) for r in range(3)] == [3, 2, 2]


def test_pad_collate_pads_masks_with_ignore_index():
    batch = [
        {"image": torch.ones(3, 4, 5), "mask": torch.zeros(4, 5, dtype=torch.long), "index": 0},
        {"image": torch.ones(3, 6, 3), "mask": torch.ones(6, 3, dtype=torch.long), "index": 1},
    ]
    out = pad_collate(batch, ignore_index=255)
    assert out["image"].shape == (2, 3, 6, 5) and out["mask"].shape == (2, 6, 5)
    assert (out["mask"][0, 4:] == 255).all() and (out["mask"][0, :4] == 0).all()
    assert (out["mask"][1, :, 3:] == 255).all() and (out["image"][1, :, :, 3:] == 0).all()
    assert out["index"].tolist() == [0, 1]

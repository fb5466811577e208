"""Reaching through torch ``Subset``s to the seglab dataset beneath (its ``load`` and its
files), and the fixed random subsets the dataset tools look at."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Subset


def unwrap(dataset: Dataset) -> tuple[Dataset, list[int]]:
    """The dataset that has ``load`` and the indices into it that ``dataset`` covers
    (a ``Subset``, e.g. the DataModule's ``val_subset``, covers its ``indices``)."""
    indices = list(range(len(dataset)))
    while isinstance(dataset, Subset):
        indices = [int(dataset.indices[i]) for i in indices]
        dataset = dataset.dataset
    if not hasattr(dataset, "load"):
        raise TypeError(f"{type(dataset).__name__} has no load(i); seglab datasets have one")
    return dataset, indices


def sample_file(dataset: Dataset, index: int) -> str | None:
    """The file behind item ``index`` of a seglab dataset (its image), when it says."""
    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, dataset.indices[index]
    samples = getattr(dataset, "samples", None)
    if samples is not None:
        first = samples[index]
        return str(first[0] if isinstance(first, tuple | list) else first)
    return None


def choose_indices(n: int, num: int | None, seed: int | None, shuffle: bool) -> list[int]:
    """``num`` positions of ``n`` (all when null): a fixed random choice by ``seed``, sorted,
    or the first ones."""
    if num is None or num >= n:
        return list(range(n))
    if not shuffle:
        return list(range(num))
    rng = np.random.default_rng(0 if seed is None else seed)
    return sorted(rng.choice(n, num, replace=False).tolist())

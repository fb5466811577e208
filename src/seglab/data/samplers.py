"""Samplers that make data order and augmentation exact across resume, workers and DDP.

Lightning leaves samplers that already are ``DistributedSampler``s in place (it would
otherwise insert its own), and calls ``set_epoch`` on them every epoch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler


class SeededSampler(DistributedSampler):
    """Shuffles with a permutation that depends only on (seed, epoch), and yields
    ``(index, sample_seed)`` pairs so that each sample's augmentation depends only on
    (seed, epoch, index). With one process it is a plain seeded shuffle.

    ``resume_at(epoch, n)`` makes the next pass over that epoch start at its ``n``-th index,
    so that a run resumed mid-epoch sees exactly the samples it had not seen yet."""

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=drop_last,
        )
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, start: int) -> None:
        self._resume = (epoch, start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            start = self._resume[1]
        self._resume = None  # once: later epochs start at their beginning
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        seeds = torch.randint(0, 2**31 - 1, (len(self.dataset),), generator=g).tolist()
        for index in itertools.islice(super().__iter__(), start, None):
            yield index, seeds[index]


class UnpaddedDistributedSampler(DistributedSampler):
    """Evaluation sampler: every sample is seen by exactly one process, none twice.

    torch's ``DistributedSampler`` pads the last shard with duplicates so that all processes
    get the same number of samples; summed into a confusion matrix, those duplicates skew the
    metrics. Shards here may differ in length by one, which evaluation tolerates.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))
        self.total_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

"""Reproducible, resumable data order.

* :class:`ResumableSampler` - a :class:`~torch.utils.data.DistributedSampler` (seeded permutation per epoch,
  sharded across processes) that can start part-way through an epoch and yields ``(epoch, index)`` keys; given
  each item's shape key, it orders the epoch so that each batch holds items of one shape (:func:`group_in_batches`).
* :class:`SeededDataset` - seeds Python's, NumPy's and torch's random generators from ``(seed, epoch, index)``
  around each ``__getitem__`` so that random augmentation depends only on the sample, not on worker count,
  worker assignment or interruptions.
"""
from __future__ import annotations

import random
from typing import Hashable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


class ResumableSampler(DistributedSampler):
    """DistributedSampler whose iteration starts at sample ``start`` of this process's share of the epoch and which
    yields ``(epoch, index)`` pairs (read by :class:`SeededDataset`). With one process it is a seeded shuffle.
    ``shape_keys`` (one per item, equal for items of one shape) and ``batch_size``: the epoch's order is regrouped
    so that every ``batch_size`` consecutive items share a key (:func:`group_in_batches`)."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True, shape_keys: Optional[Sequence[Hashable]] = None,
                 batch_size: Optional[int] = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        if shape_keys is not None and (batch_size is None or len(shape_keys) != len(dataset)):
            raise ValueError("shape_keys needs one key per item and the batch_size to group them in")
        self.shape_keys, self.batch_size = shape_keys, batch_size
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Select the epoch (its permutation) and skip the first ``start`` samples of this process's share."""
        self.set_epoch(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator:
        indices = list(super().__iter__())
        if self.shape_keys is not None:
            indices = group_in_batches(indices, self.shape_keys, self.batch_size)
        indices = indices[self.start:]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def group_in_batches(indices: Sequence[int], keys: Sequence[Hashable], batch_size: int) -> list[int]:
    """``indices`` reordered into runs of ``batch_size`` items of one key each, in the order the runs fill up
    (items keep their order within a key); the items of runs left unfilled come last, in their order."""
    full, open_runs = [], {}
    for i in indices:
        run = open_runs.setdefault(keys[i], [])
        run.append(i)
        if len(run) == batch_size:
            full += run
            open_runs[keys[i]] = []
    left = {i for run in open_runs.values() for i in run}
    return full + [i for i in indices if i in left]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed derived from (seed, epoch, index) with NumPy's SeedSequence (well mixed, platform independent)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(2, np.uint32).astype(np.uint64)
               .dot(np.array([1, 2 ** 32], dtype=np.uint64)) >> np.uint64(1))


def set_dataset_epoch(dataset, epoch: int) -> None:
    """Call ``set_epoch`` on ``dataset`` and on the datasets it wraps (``ConcatDataset``, ``Subset``)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    for child in getattr(dataset, "datasets", []) or []:
        set_dataset_epoch(child, epoch)
    if hasattr(dataset, "dataset"):
        set_dataset_epoch(dataset.dataset, epoch)


class SeededDataset(Dataset):
    """Wraps a map-style dataset; ``self[(epoch, index)]`` returns ``base[index]`` computed with all random generators
    seeded from ``(seed, epoch, index)``. The caller's generator states are restored afterwards."""

    def __init__(self, base, seed: int):
        self.base = base
        self.seed = int(seed)
        self._epoch = None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if epoch != self._epoch:
            set_dataset_epoch(self.base, epoch)
            self._epoch = epoch
        s = sample_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s)
                random.seed(s)
                np.random.seed(s % 2 ** 32)
                return self.base[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)

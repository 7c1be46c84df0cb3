"""Pretraining data: a Dataset of (view 1, view 2, is-lesion) over the slice cache, its sampler and DataLoader.

Randomness never depends on worker count or resumption: each sample's views come from a numpy Generator seeded by
(seed, epoch, slice row), and the sampler is torch's DistributedSampler (seeded shuffle, set_epoch), so epoch e's
batches are the same in a fresh and in a resumed run, and N ranks × b see the same global batches as 1 process × N·b.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from clearct.pretrain.cache import SliceCache, SliceIndex
from clearct.pretrain.views import ViewSpec, make_views


class PretrainSlices(Dataset):
    """Item ``(epoch, row)`` → ``(x1, x2, lesion)``; with ``lesion_crops`` a key slice gets the LECL view pair."""

    def __init__(self, cache: SliceCache, index: SliceIndex, spec: ViewSpec, *, lesion_crops: bool, seed: int = 0):
        self.cache, self.index, self.spec = cache, index, spec
        self.lesion_crops, self.seed = lesion_crops, seed

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, bool]:
        epoch, row = item
        rng = np.random.default_rng([self.seed, epoch, row])
        hu = self.cache.slice(int(self.index.scan[row]), int(self.index.z[row]))
        boxes = self.index.boxes.get(row) if self.lesion_crops else None
        box = boxes[int(rng.integers(len(boxes)))] if boxes else None
        x1, x2 = make_views(hu, self.spec, rng, box)
        return x1, x2, box is not None


class EpochSampler(Sampler):
    """DistributedSampler (shuffled, drop_last) whose items carry the epoch: ``(epoch, row)``."""

    def __init__(self, size: int, *, rank: int, world_size: int, seed: int):
        self.inner = DistributedSampler(range(size), num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                        drop_last=True)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def make_loader(
    dataset: PretrainSlices, *, local_batch: int, rank: int = 0, world_size: int = 1, workers: int = 2,
    seed: int = 0, pin_memory: bool = False,
) -> DataLoader:
    """Shuffled loader with full batches only; call ``loader.sampler.set_epoch(e)`` before each epoch."""
    sampler = EpochSampler(len(dataset), rank=rank, world_size=world_size, seed=seed)
    return DataLoader(dataset, batch_size=local_batch, sampler=sampler, num_workers=workers, drop_last=True,
                      pin_memory=pin_memory, persistent_workers=False)

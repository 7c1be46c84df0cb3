"""Pretraining data: a Dataset of (view 1, view 2, extra) over the slice cache, its sampler and DataLoader.

``extra`` is what the method's loss needs besides the views: for LECL whether the pair is a lesion pair (the
momentum view a crop around a key-slice box), for MoCo always False, for the supervised ceiling the slice's target
vector (one 0/1 per lesion label).

Randomness never depends on worker count or resumption: the sampler draws each epoch's global order from
(seed, epoch) and deals it to the ranks round-robin, and each sample's views come from a numpy Generator seeded by
(seed, epoch, position in that order, slice row), so epoch e's batches are the same in a fresh and in a resumed run,
N ranks × b see the same global batches as 1 process × N·b, and a slice drawn twice in one epoch (oversampling)
gets two different view pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from clearct.pretrain.cache import SliceCache, SliceIndex
from clearct.pretrain.views import ViewSpec, draw_views, make_views

Mode = Literal["moco", "lecl", "supervised"]
Item = tuple[int, int, int]  # epoch, position in the epoch's global order, slice row


class PretrainSlices(Dataset):
    """Item ``(epoch, position, row)`` → ``(x1, x2, extra)``.

    ``moco``: two random resized crops. ``lecl``: a key slice gets the full-slice / lesion-crop pair, any other
    slice two random crops. ``supervised``: two full-slice views (crops could cut the lesion out of a positive).
    With ``device_views`` the item is ``(hu, params, extra)`` instead: the int16 slice and the pair's packed
    decisions (2, 9), rendered by the training loop (:func:`~clearct.pretrain.views.render_batch`).
    """

    def __init__(self, cache: SliceCache, index: SliceIndex, spec: ViewSpec, *, mode: Mode, seed: int = 0,
                 device_views: bool = False):
        if mode == "supervised" and (index.targets is None or not index.label_names):
            raise ValueError("the supervised mode needs lesion targets in the slice index")
        self.cache, self.index, self.spec, self.mode, self.seed = cache, index, spec, mode, seed
        self.device_views = device_views

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: Item) -> tuple[torch.Tensor, torch.Tensor, bool | torch.Tensor]:
        epoch, position, row = item
        rng = np.random.default_rng([self.seed, epoch, position, row])
        hu = self.cache.slice(int(self.index.scan[row]), int(self.index.z[row]))
        extra: bool | torch.Tensor
        box = None
        if self.mode == "supervised":
            targets = self.index.targets
            assert targets is not None  # checked in __init__
            extra = torch.from_numpy(targets[row])
        else:
            boxes = self.index.boxes.get(row) if self.mode == "lecl" else None
            box = boxes[int(rng.integers(len(boxes)))] if boxes else None
            extra = box is not None
        full = self.mode == "supervised"
        if self.device_views:
            p1, p2 = draw_views(hu.shape[0], hu.shape[1], self.spec, rng, box, full_slice=full)
            return torch.from_numpy(hu), torch.stack([p1.packed(), p2.packed()]), extra
        x1, x2 = make_views(hu, self.spec, rng, box, full_slice=full)
        return x1, x2, extra


def epoch_order(rows: np.ndarray, emphasis: np.ndarray | None, share: float | None, *, seed: int,
                epoch: int) -> np.ndarray:
    """The global sample order of one epoch: ``len(rows)`` slice rows.

    Without ``share`` a permutation of ``rows``. With ``share`` s, round(s·n) draws (with replacement) come from
    the ``emphasis`` rows and the rest, without replacement, from the others, shuffled together — so about a share
    s of every batch is, e.g., annotated slices (≈ 9–12 % of a DeepLesion-like cohort's slices otherwise).
    """
    rng = np.random.default_rng([seed, epoch, 0x5A])
    if share is None or emphasis is None or len(emphasis) == 0:
        return rng.permutation(rows)
    n = len(rows)
    others = np.setdiff1d(rows, emphasis)
    n_emph = min(n, int(round(share * n))) if len(others) else n
    picked = rng.choice(emphasis, n_emph, replace=True)
    rest = rng.permutation(others)[: n - n_emph]
    if len(rest) < n - n_emph:  # few other rows: top up with replacement
        rest = np.concatenate([rest, rng.choice(others, n - n_emph - len(rest), replace=True)])
    return rng.permutation(np.concatenate([picked, rest]))


class EpochSampler(Sampler):
    """Each epoch's global order (:func:`epoch_order`), cut to a multiple of ``world_size`` and dealt round-robin;
    yields ``(epoch, position, row)``."""

    def __init__(self, rows: np.ndarray, *, rank: int, world_size: int, seed: int,
                 emphasis: np.ndarray | None = None, share: float | None = None):
        self.rows, self.emphasis, self.share = np.asarray(rows, np.int64), emphasis, share
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Item]:
        order = epoch_order(self.rows, self.emphasis, self.share, seed=self.seed, epoch=self.epoch)
        usable = len(order) - len(order) % self.world_size
        for position in range(self.rank, usable, self.world_size):
            yield self.epoch, position, int(order[position])

    def __len__(self) -> int:
        return len(self.rows) // self.world_size


def make_loader(
    dataset: PretrainSlices, *, local_batch: int, rank: int = 0, world_size: int = 1, workers: int = 2,
    seed: int = 0, pin_memory: bool = False, rows: np.ndarray | None = None, emphasis: np.ndarray | None = None,
    share: float | None = None,
) -> DataLoader:
    """Shuffled loader with full batches only over ``rows`` (default: every slice); ``share`` of each epoch drawn
    from the ``emphasis`` rows. Call ``loader.sampler.set_epoch(e)`` before each epoch."""
    rows = np.arange(len(dataset)) if rows is None else rows
    sampler = EpochSampler(rows, rank=rank, world_size=world_size, seed=seed, emphasis=emphasis, share=share)
    return DataLoader(dataset, batch_size=local_batch, sampler=sampler, num_workers=workers, drop_last=True,
                      pin_memory=pin_memory, persistent_workers=False,
                      collate_fn=pad_slices if dataset.device_views else None)


def pad_slices(items: list[tuple[torch.Tensor, torch.Tensor, bool | torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """Collate ``device_views`` items: slices of different sizes padded to the largest (the crops stay inside each
    slice, so the padding is never read)."""
    height, width = max(i[0].shape[0] for i in items), max(i[0].shape[1] for i in items)
    hu = torch.full((len(items), height, width), -1024, dtype=torch.int16)
    for k, (plane, _, _) in enumerate(items):
        hu[k, : plane.shape[0], : plane.shape[1]] = plane
    extra = [i[2] for i in items]
    extras = torch.stack(extra) if isinstance(extra[0], torch.Tensor) else torch.tensor(extra)  # type: ignore[arg-type]
    return hu, torch.stack([i[1] for i in items]), extras

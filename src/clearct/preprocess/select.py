"""Optional slice selection: every k-th slice, or resampling along z to a target slice thickness."""

from __future__ import annotations

import dataclasses

import numpy as np

from clearct.common.errors import ClearctError
from clearct.io.volume import CTVolume


def slab_weights(z_mm: np.ndarray, centres: np.ndarray, thickness: float) -> np.ndarray:
    """(len(centres), len(z_mm)) weights: the share of each new slab [c ± t/2] covered by each input slice.

    Each input slice covers the z interval half-way to its neighbours (so uneven spacing is honoured);
    rows are normalised to sum to 1, which also handles slabs that stick out of the scanned range.
    """
    mids = (z_mm[1:] + z_mm[:-1]) / 2
    first = z_mm[0] - (mids[0] - z_mm[0] if len(mids) else thickness / 2)
    last = z_mm[-1] + (z_mm[-1] - mids[-1] if len(mids) else thickness / 2)
    edges = np.concatenate([[first], mids, [last]])
    lo = centres[:, None] - thickness / 2
    hi = centres[:, None] + thickness / 2
    overlap = np.clip(np.minimum(hi, edges[None, 1:]) - np.maximum(lo, edges[None, :-1]), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def select_slices(volume: CTVolume, *, every: int | None = None, thickness_mm: float | None = None) -> CTVolume:
    """A new CTVolume with fewer (or resampled) slices and ``z_mm``/``spacing_mm`` that match them.

    ``every=k`` keeps slices 0, k, 2k, … (their original indices go to ``meta["source_slice_index"]``);
    ``thickness_mm=t`` resamples to slabs t mm apart, each the mean HU over [z ± t/2] with every input slice
    covering half the gap to its neighbours (thick-slab reconstruction; for t below the spacing it
    approaches nearest-slice sampling). With neither, the volume comes back unchanged.
    """
    if every is not None and thickness_mm is not None:
        raise ClearctError("select_slices: give either every or thickness_mm, not both")
    if every is None and thickness_mm is None:
        return volume
    meta = dict(volume.meta)
    if every is not None:
        if every < 1:
            raise ClearctError(f"select_slices: every must be ≥ 1, got {every}")
        index = np.arange(0, volume.hu.shape[0], every)
        meta["source_slice_index"] = index.tolist()
        return dataclasses.replace(
            volume,
            hu=np.ascontiguousarray(volume.hu[index]),
            z_mm=volume.z_mm[index],
            spacing_mm=(volume.spacing_mm[0] * every, *volume.spacing_mm[1:]),
            meta=meta,
        )
    if not thickness_mm or thickness_mm <= 0:
        raise ClearctError(f"select_slices: thickness_mm must be > 0, got {thickness_mm}")
    z_mm = volume.z_mm
    n_new = int(np.floor((z_mm[-1] - z_mm[0]) / thickness_mm + 1e-6)) + 1
    centres = z_mm[0] + thickness_mm * np.arange(n_new)
    weights = slab_weights(z_mm, centres, thickness_mm).astype(np.float32)
    hu = np.empty((n_new, *volume.hu.shape[1:]), dtype=np.int16)
    for j, row in enumerate(weights):
        used = np.flatnonzero(row)  # a slab touches only a few input slices
        slab = np.tensordot(row[used], volume.hu[used].astype(np.float32), axes=1)
        hu[j] = np.clip(np.rint(slab), -32768, 32767)
    meta["resampled_thickness_mm"] = float(thickness_mm)
    return dataclasses.replace(
        volume, hu=hu, z_mm=centres, spacing_mm=(float(thickness_mm), *volume.spacing_mm[1:]), meta=meta
    )

"""Volume preparation shared by the 3D baselines: contract orientation → RAS, resampling, HU scaling, pad/crop."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from clearct.io.volume import CTVolume


def ras_volume(
    volume: CTVolume,
    spacing_mm: Sequence[float],
    hu_range: tuple[float, float],
    out_range: tuple[float, float],
) -> torch.Tensor:
    """(1, 1, X, Y, Z) float tensor in RAS voxel order resampled to ``spacing_mm`` (x, y, z), HU clipped to
    ``hu_range`` and mapped linearly onto ``out_range``.

    The CTVolume's columns run right → left and rows anterior → posterior, so both in-plane axes are flipped to
    point Right and Anterior; slices already run inferior → superior.
    """
    ras = torch.from_numpy(volume.hu).permute(2, 1, 0).flip(0, 1)
    src = (volume.spacing_mm[2], volume.spacing_mm[1], volume.spacing_mm[0])
    size = [max(1, round(n * s / t)) for n, s, t in zip(ras.shape, src, spacing_mm)]
    x = F.interpolate(ras.float()[None, None], size=size, mode="trilinear", align_corners=False)
    lo, hi = hu_range
    a, b = out_range
    return a + (x.clamp(lo, hi) - lo) * ((b - a) / (hi - lo))


def pad_or_crop(x: torch.Tensor, size: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """Centre-pad (symmetric, with ``value``) then centre-crop the last len(size) axes to ``size``."""
    dims = len(size)
    pad: list[int] = []
    for n, target in zip(reversed(x.shape[-dims:]), reversed(size)):
        extra = max(0, target - n)
        pad += [extra // 2, extra - extra // 2]
    x = F.pad(x, pad, value=value)
    index = [slice(None)] * (x.ndim - dims)
    for n, target in zip(x.shape[-dims:], size):
        start = (n - target) // 2
        index.append(slice(start, start + target))
    return x[tuple(index)]

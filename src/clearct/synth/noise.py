"""Acquisition: reconstruction kernel (blur / edge enhancement), slice thickness, correlated noise, HU offset.

Two presets: ``standard`` (the training cohort) and ``external`` (another scanner: more noise, a sharper kernel,
thicker slices and a small calibration offset), used for external validation; every field can be overridden.

:func:`acquire` works in z-slabs: the in-plane blur and noise are per slice, the z profile reads a halo of its
kernel's radius (:func:`~clearct.synth.fields.z_filter_rows`) and the noise is a
:class:`~clearct.synth.fields.SlabField`, so only the int16 result is volume-sized.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter

from clearct.synth.canvas import SLAB_VOXELS
from clearct.synth.fields import SlabField, z_filter_rows

HU_MIN, HU_MAX = -1024, 3071  # 12-bit CT range stored with RescaleIntercept −1024

KERNELS = {"soft": (1.0, 0.0), "standard": (0.7, 0.0), "sharp": (0.45, 0.6)}  # blur σ mm, unsharp amount


@dataclass(frozen=True)
class Acquisition:
    noise_hu: float = 12.0  # noise standard deviation per voxel
    kernel: str = "standard"
    thickness_factor: float = 1.0  # slice thickness / slice spacing (> 1: overlapping, blurred along z)
    hu_offset: float = 0.0  # calibration offset added to every voxel
    kvp: int = 120


PRESETS = {
    "standard": Acquisition(),
    "external": Acquisition(noise_hu=22.0, kernel="sharp", thickness_factor=1.6, hu_offset=8.0, kvp=100),
}


def acquisition(preset: str, **overrides) -> Acquisition:
    """The named preset with any non-None overrides applied."""
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


def acquire(hu: np.ndarray, spacing_zyx: tuple[float, float, float], acq: Acquisition,
            rng: np.random.Generator, *, slab_voxels: int = SLAB_VOXELS) -> np.ndarray:
    """Turn the ideal HU volume into a scanner-like int16 image (blur, z profile, noise, offset, 12-bit clip),
    ``slab_voxels`` voxels at a time."""
    dz, dy, dx = spacing_zyx
    depth = hu.shape[0]
    slab = max(1, slab_voxels // max(hu.shape[1] * hu.shape[2], 1))
    blur_mm, unsharp = KERNELS[acq.kernel]

    def in_plane(k0: int, k1: int) -> np.ndarray:
        img = gaussian_filter(hu[k0:k1], (0.0, blur_mm / dy, blur_mm / dx), mode="nearest")
        if unsharp:
            img = img + unsharp * (img - gaussian_filter(img, (0.0, 1.5 / dy, 1.5 / dx), mode="nearest"))
        return img

    extra = dz * np.sqrt(max(acq.thickness_factor**2 - 1.0, 0.0))  # z profile width beyond the spacing
    z_sigma = extra / 2.355 / dz if extra > 0 and depth > 1 else 0.0
    # Correlated noise: white noise low-passed in-plane (≥ 0.6 px), sharper kernels keep it finer.
    corr = max(0.6, 0.8 * blur_mm / dx)
    noise = SlabField(rng, hu.shape, (0.0, corr, corr), mode="reflect", slab=slab)
    gain = acq.noise_hu / max(noise.std, 1e-6)
    out = np.empty(hu.shape, np.int16)
    for k0 in range(0, depth, slab):
        k1 = min(k0 + slab, depth)
        img = z_filter_rows(in_plane, depth, z_sigma, k0, k1) if z_sigma > 0 else in_plane(k0, k1)
        grain = noise.rows(k0, k1)
        grain *= gain
        out[k0:k1] = np.clip(np.rint(img + grain + acq.hu_offset), HU_MIN, HU_MAX).astype(np.int16)
    return out

"""Acquisition: reconstruction kernel (blur / edge enhancement), slice thickness, correlated noise, HU offset.

Two presets: ``standard`` (the training cohort) and ``external`` (another scanner: more noise, a sharper kernel,
thicker slices and a small calibration offset), used for external validation; every field can be overridden.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

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
            rng: np.random.Generator) -> np.ndarray:
    """Turn the ideal HU volume into a scanner-like int16 image (blur, z profile, noise, offset, 12-bit clip)."""
    dz, dy, dx = spacing_zyx
    blur_mm, unsharp = KERNELS[acq.kernel]
    img = gaussian_filter(hu, (0.0, blur_mm / dy, blur_mm / dx), mode="nearest")
    if unsharp:
        img = img + unsharp * (img - gaussian_filter(img, (0.0, 1.5 / dy, 1.5 / dx), mode="nearest"))
    extra = dz * np.sqrt(max(acq.thickness_factor**2 - 1.0, 0.0))  # z profile width beyond the spacing
    if extra > 0 and hu.shape[0] > 1:
        img = gaussian_filter1d(img, extra / 2.355 / dz, axis=0, mode="nearest")
    # Correlated noise: white noise low-passed in-plane (≥ 0.6 px), sharper kernels keep it finer.
    corr = max(0.6, 0.8 * blur_mm / dx)
    noise = gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), (0.0, corr, corr))
    noise *= acq.noise_hu / max(float(noise.std()), 1e-6)
    img = img + noise + acq.hu_offset
    return np.clip(np.rint(img), HU_MIN, HU_MAX).astype(np.int16)

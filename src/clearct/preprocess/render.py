"""Every slice of a volume in every window, resized and normalised for a 2D encoder, vectorised with torch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from clearct.preprocess.windows import Window

# Float elements of windowed, full-resolution slices per chunk (8 MB as float32): a few slices at a time stay in
# cache across window, resize and normalise, 3-4× faster on CPU than whole-volume passes (benchmarks/read.py).
_CHUNK_ELEMENTS = 2 * 2**20


def render_slices(
    hu: np.ndarray | torch.Tensor,
    windows: Sequence[Window],
    size: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(Z, Y, X) HU → (Z, W, 3, size, size) float32 model inputs.

    Each slice is clipped and scaled in each window (all windows at once), resized to ``size`` × ``size`` with
    antialiased bilinear interpolation (windowing happens first, as it would on the scanner console), copied to
    3 channels and normalised per channel with ``mean``/``std``. Flattening the first two axes gives rows in
    (slice, window) order, the order of the h5 feature contract. Work runs on ``device`` (default: where
    ``hu`` lives) in chunks of slices so memory stays bounded for long scans.
    """
    hu_t = torch.as_tensor(np.ascontiguousarray(hu) if isinstance(hu, np.ndarray) else hu)
    if hu_t.ndim != 3:
        raise ValueError(f"render_slices needs (Z, Y, X) HU, got shape {tuple(hu_t.shape)}")
    dev = torch.device(device) if device is not None else hu_t.device
    z, h, w = hu_t.shape
    n_w = len(windows)
    lo = torch.tensor([win.lo for win in windows], dtype=torch.float32, device=dev).view(1, n_w, 1, 1)
    width = torch.tensor([win.hi - win.lo for win in windows], dtype=torch.float32, device=dev).view(1, n_w, 1, 1)
    mean_t = torch.tensor(mean, dtype=torch.float32, device=dev).view(1, 1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=dev).view(1, 1, 3, 1, 1)
    out = torch.empty((z, n_w, 3, size, size), dtype=torch.float32, device=dev)
    step = max(1, _CHUNK_ELEMENTS // (n_w * h * w))
    for z0 in range(0, z, step):
        x = hu_t[z0 : z0 + step].to(dev, torch.float32).unsqueeze(1)
        x = ((x - lo) / width).clamp_(0.0, 1.0)  # (c, W, Y, X)
        if (h, w) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[z0 : z0 + step] = (x.unsqueeze(2) - mean_t) / std_t
    return out

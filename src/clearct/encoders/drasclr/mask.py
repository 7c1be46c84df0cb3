"""Body and lung masks from HU thresholds and connected components (scipy.ndimage), no external tools.

DrasCLR places its patches inside the lungs of an atlas-registered scan. clearct instead derives a mask per scan:
the body is the largest connected component above −500 HU with holes filled slice by slice; the lungs are the
large air components (< −400 HU) inside the body. The mask's bounding box then stands in for the atlas frame
(see ``patches.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

MaskKind = Literal["lung", "body"]

# Connect only within an axial slice, so hole filling works slice by slice in one call.
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class RegionMask:
    """A boolean (Z, Y, X) mask and what it holds: ``kind`` is "lung" or "body" (the fallback)."""

    mask: np.ndarray
    kind: MaskKind

    def bbox(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive voxel bounding box (lo, hi), each (3,) int in (z, y, x)."""
        idx = np.nonzero(self.mask)
        return np.array([i.min() for i in idx]), np.array([i.max() for i in idx])


def _largest_components(mask: np.ndarray, keep: int, min_ratio: float = 0.0) -> np.ndarray:
    """Keep the ``keep`` largest 3D components, dropping any smaller than ``min_ratio`` × the largest."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1][:keep]
    chosen = [i + 1 for i in order if sizes[i] >= min_ratio * sizes[order[0]]]
    return np.isin(labels, chosen)


def body_mask(hu: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """Largest component above ``threshold`` HU, with the inside (lungs, bowel gas) filled slice by slice."""
    body = _largest_components(hu > threshold, keep=1)
    return ndimage.binary_fill_holes(body, structure=_IN_PLANE)


def lung_mask(hu: np.ndarray, body: np.ndarray | None = None, threshold: float = -400.0) -> np.ndarray:
    """Air inside the body: the one or two largest components (two lungs, or one when they touch)."""
    body = body_mask(hu) if body is None else body
    air = (hu < threshold) & body
    air = ndimage.binary_opening(air, iterations=1)  # cut thin bridges to bowel gas and the skin fold
    return _largest_components(air, keep=2, min_ratio=0.1)


def region_mask(hu: np.ndarray, kind: MaskKind = "lung", min_fraction: float = 0.01) -> RegionMask:
    """The lung mask, or the body mask when ``kind="body"`` or the lungs hold < ``min_fraction`` of the body.

    The fallback lets DrasCLR run on scans without lungs in view (abdominal CT, phantoms); callers see it in
    ``RegionMask.kind``. An empty body (a scan of air) is an error for the caller to report.
    """
    body = body_mask(hu)
    if not body.any():
        raise ValueError("no body found above -500 HU")
    if kind == "lung":
        lungs = lung_mask(hu, body)
        if lungs.sum() >= min_fraction * body.sum():
            return RegionMask(lungs, "lung")
    return RegionMask(body, "body")

"""Volume-wide random fields and z filters computed slab by slab, with the numbers of the whole-volume computation.

A phantom at clinical size (700 × 512² voxels) cannot hold a float volume per field and filter temporary (that was
≈ 80 bytes per voxel). Here a field is made in z-slabs:

- the white noise is drawn from the generator in slice order, so the slabs hold exactly the numbers of one
  ``rng.standard_normal((Z, Y, X))`` call (the generator draws one normal after the other);
- the Gaussian filter along z reads a halo of the kernel's radius around the slab and is computed as scipy's
  ``correlate1d`` computes a symmetric kernel (double accumulation, taps from the outside in), then the in-plane
  passes run with scipy on the slab, so a slab equals the same rows of ``scipy.ndimage.gaussian_filter`` on the whole
  volume bit for bit;
- the standard deviation over the whole volume (fields are normalised by it) comes from per-slice float64 sums added
  with ``math.fsum``, which does not depend on how the volume is cut (it differs from ``np.std`` of the float32 volume
  only in the last bits).

Each field is computed once: the first pass keeps its slabs in an unnamed temporary file (4 bytes per voxel on disk,
read back slab by slab), or in memory when the volume is one slab.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
from scipy.ndimage import gaussian_filter1d

TRUNCATE = 4.0  # scipy's default: the kernel reaches 4 σ


def gaussian_weights(sigma: float) -> np.ndarray:
    """scipy.ndimage's order-0 Gaussian kernel for ``sigma`` (same expression, so the same doubles)."""
    radius = int(TRUNCATE * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return phi / phi.sum()


def z_filter_rows(rows: Callable[[int, int], np.ndarray], depth: int, sigma: float, k0: int, k1: int) -> np.ndarray:
    """Rows ``k0:k1`` of ``gaussian_filter1d(volume, sigma, axis=0, mode="nearest")`` (float32) where ``rows(a, b)``
    returns the volume's float32 rows ``a:b`` and the volume has ``depth`` rows; reads only ``k0 - r : k1 + r``."""
    w = gaussian_weights(sigma)
    r = (len(w) - 1) // 2
    a, b = max(0, k0 - r), min(depth, k1 + r)
    chunk = rows(a, b)
    index = np.clip(np.arange(k0 - r, k1 + r), 0, depth - 1) - a  # mode "nearest" at the volume's ends
    lines = chunk[index].astype(np.float64)
    n = k1 - k0
    acc = lines[r : r + n] * w[r]
    for j in range(r, 0, -1):  # correlate1d's symmetric loop: outermost taps first
        acc += (lines[r - j : r - j + n] + lines[r + j : r + j + n]) * w[r - j]
    return acc.astype(np.float32)


class WhiteRows:
    """The slices of ``rng.standard_normal((Z, Y, X)).astype(float32)``, drawn in order and kept while needed."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int, int]):
        self.rng, self.shape = rng, shape
        self.lo = 0
        self.buf = np.empty((0, *shape[1:]), np.float32)

    def __call__(self, a: int, b: int) -> np.ndarray:
        if a < self.lo:
            raise ValueError("white-noise rows are drawn in order; earlier rows are gone")
        self.buf, self.lo = self.buf[a - self.lo :], a
        need = b - (self.lo + len(self.buf))
        if need > 0:
            fresh = self.rng.standard_normal((need, *self.shape[1:])).astype(np.float32)
            self.buf = np.concatenate([self.buf, fresh]) if len(self.buf) else fresh
        return self.buf[: b - self.lo]


class SlabField:
    """``gaussian_filter(rng.standard_normal(shape).astype(float32), sigmas, mode=mode)``, slab by slab.

    Building it draws the field's white noise from ``rng`` (which then stands where the whole-volume call leaves it),
    filters it and records the standard deviation over the volume (:attr:`std`); :meth:`rows` then returns the
    filtered rows of consecutive slabs.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int, int], sigmas: tuple[float, float, float], *,
                 mode: str, slab: int):
        if sigmas[0] > 1e-15 and mode != "nearest":
            raise ValueError("a field filtered along z is made with mode 'nearest'")
        self.shape, self.slab = shape, max(1, slab)
        depth = shape[0]
        white = WhiteRows(rng, shape)
        sums, squares = [], []
        self._spill: BinaryIO | None = None
        self._kept: np.ndarray | None = None
        for k0 in range(0, depth, self.slab):
            k1 = min(k0 + self.slab, depth)
            f = z_filter_rows(white, depth, sigmas[0], k0, k1) if sigmas[0] > 1e-15 else white(k0, k1).copy()
            for axis in (1, 2):
                if sigmas[axis] > 1e-15:
                    f = gaussian_filter1d(f, sigmas[axis], axis=axis, mode=mode)
            for plane in f:
                sums.append(float(np.sum(plane, dtype=np.float64)))
                p64 = plane.astype(np.float64)
                squares.append(float(np.sum(p64 * p64)))
            if k0 == 0 and k1 == depth:
                self._kept = f
            else:
                if self._spill is None:
                    self._spill = tempfile.TemporaryFile(prefix="clearct-synth-field-")  # noqa: SIM115 — read in rows()
                self._spill.write(np.ascontiguousarray(f).tobytes())
        n = float(np.prod(shape))
        mean = math.fsum(sums) / n
        self.std = math.sqrt(max(math.fsum(squares) / n - mean * mean, 0.0))
        if self._spill is not None:
            self._spill.seek(0)
        self._next = 0

    def rows(self, k0: int, k1: int) -> np.ndarray:
        """The filtered rows ``k0:k1`` (float32); slabs are read in order, each once."""
        if self._kept is not None:
            return self._kept[k0:k1]
        if k0 != self._next or self._spill is None:
            raise ValueError("field rows are read in order, each once")
        self._next = k1
        plane = self.shape[1] * self.shape[2]
        data = np.frombuffer(self._spill.read((k1 - k0) * plane * 4), np.float32)
        if k1 == self.shape[0]:
            self._spill.close()
        return data.reshape(k1 - k0, *self.shape[1:]).copy()

    def normalised(self, k0: int, k1: int) -> np.ndarray:
        """Rows ``k0:k1`` divided by the volume's standard deviation (``smooth_field``'s unit-variance field)."""
        return self.rows(k0, k1) / max(self.std, 1e-6)

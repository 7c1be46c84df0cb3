"""A voxel canvas in patient millimetres: HU and organ-code volumes plus shape rasterisers.

Axes follow the CTVolume contract: index (z, y, x); x grows towards patient left, y towards posterior, z towards
superior. Shapes are rasterised only inside their bounding box, so many small shapes stay cheap.

A canvas can be worked on in z-slabs (:meth:`Canvas.slabs`): a slab is a canvas over a run of slices whose arrays are
views of the whole canvas's, and whose boxes are the whole grid's boxes cut to the slab, so a voxel-wise drawing
done slab by slab gives the same voxels as one done on the whole grid while its temporaries stay slab-sized.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

# Organ codes of the label volume (uint8). Lesion placement and the tests use them; 0 is air outside the body.
AIR, SKIN, FAT, MUSCLE, LUNG, AIRWAY, LUNG_VESSEL, HEART, MEDIASTINUM = range(9)
LIVER, SPLEEN, KIDNEY, BOWEL, BLADDER, CORTEX, MARROW, STOMACH, VISCERAL_FAT = range(9, 18)
GREAT_VESSEL, TABLE, CANAL, DISC, EFFUSION, LESION = range(18, 24)
ORGAN_NAMES = ["air", "skin", "fat", "muscle", "lung", "airway", "lung_vessel", "heart", "mediastinum", "liver", "spleen", "kidney", "bowel", "bladder", "cortex", "marrow", "stomach", "visceral_fat", "great_vessel", "table", "canal", "disc", "effusion", "lesion"]

Box = tuple[slice, slice, slice]
# A rasterised shape: its index box and weights, or (None, None) when it misses the grid.
Shape = tuple[Box | None, np.ndarray | None]
SLAB_VOXELS = 1 << 21  # voxels per slab of whole-grid work: 8 slices of 512² (temporaries ≈ 20–40 B per voxel)


@dataclass
class Canvas:
    """HU (float32) and organ codes (uint8) on the grid ``z, y, x`` (mm coordinates of voxel centres).

    ``slab_voxels`` sizes the slabs of whole-grid work (:meth:`slabs`); a slab canvas (made by :meth:`slab`) shares
    the arrays of its parent, knows the parent's z grid (``z_all``) and its first slice (``k0``).
    """

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    slab_voxels: int = SLAB_VOXELS
    hu: np.ndarray = field(init=False, repr=False)
    organ: np.ndarray = field(init=False, repr=False)
    z_all: np.ndarray = field(init=False, repr=False)
    k0: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        shape = (self.z.size, self.y.size, self.x.size)
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.organ = np.zeros(shape, dtype=np.uint8)
        self.z_all = self.z
        self.full: Box = (slice(None), slice(None), slice(None))

    @property
    def dz(self) -> float:
        """Slice spacing of the whole grid (1 mm for a single slice)."""
        return float(self.z_all[1] - self.z_all[0]) if self.z_all.size > 1 else 1.0

    # --- slabs -----------------------------------------------------------------------------------------------
    def slab(self, k0: int, k1: int) -> Canvas:
        """Slices ``k0:k1`` (of the whole grid) as a canvas whose arrays are views of this one's."""
        sub = object.__new__(Canvas)
        base = self.k0
        sub.z, sub.y, sub.x, sub.slab_voxels = self.z_all[k0:k1], self.y, self.x, self.slab_voxels
        sub.hu, sub.organ = self.hu[k0 - base:k1 - base], self.organ[k0 - base:k1 - base]
        sub.z_all, sub.k0, sub.full = self.z_all, k0, self.full
        return sub

    def slab_depth(self) -> int:
        return max(1, self.slab_voxels // max(self.y.size * self.x.size, 1))

    def slabs(self) -> Iterator[Canvas]:
        """This canvas in consecutive slabs of :meth:`slab_depth` slices."""
        depth, end = self.slab_depth(), self.k0 + self.z.size
        for k0 in range(self.k0, end, depth):
            yield self.slab(k0, min(k0 + depth, end))

    def counts(self, mask: Callable[[Canvas], np.ndarray]) -> np.ndarray:
        """Per slice, how many voxels ``mask(slab)`` marks (the mask evaluated slab by slab)."""
        return np.concatenate([np.broadcast_to(mask(s), s.hu.shape).sum(axis=(1, 2)) for s in self.slabs()])

    def pick(self, mask: Callable[[Canvas], np.ndarray], counts: np.ndarray,
             rng: np.random.Generator) -> tuple[int, int, int]:
        """A uniformly drawn voxel ``(k, i, j)`` of ``mask``: the voxel ``np.flatnonzero`` of the whole mask would
        give at ``rng.integers(total)``, found through the per-slice ``counts`` without the whole mask."""
        draw = int(rng.integers(int(counts.sum())))
        ends = np.cumsum(counts)
        k = int(np.searchsorted(ends, draw, side="right"))
        plane = np.broadcast_to(mask(self.slab(k, k + 1)), (1, self.y.size, self.x.size))[0]
        i, j = np.unravel_index(np.flatnonzero(plane)[draw - (int(ends[k - 1]) if k else 0)], plane.shape)
        return k, int(i), int(j)

    # --- coordinates -----------------------------------------------------------------------------------------
    def coords(self, box: Box | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (z, y, x) mm coordinates of a sub-box (Z,1,1), (1,Y,1), (1,1,X)."""
        bz, by, bx = box or self.full
        return self.z[bz][:, None, None], self.y[by][None, :, None], self.x[bx][None, None, :]

    def box(self, lo: np.ndarray, hi: np.ndarray) -> Box | None:
        """Index box covering the mm range [lo, hi] given as (x, y, z); None when it misses the grid (a slab: the
        whole grid's box cut to the slab)."""
        out = []
        for axis, a, b in ((self.z_all, lo[2], hi[2]), (self.y, lo[1], hi[1]), (self.x, lo[0], hi[0])):
            step = axis[1] - axis[0] if axis.size > 1 else 1.0
            i0 = max(int(np.floor((a - axis[0]) / step)), 0)
            i1 = min(int(np.ceil((b - axis[0]) / step)) + 1, axis.size)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        z0, z1 = max(out[0].start, self.k0) - self.k0, min(out[0].stop, self.k0 + self.z.size) - self.k0
        if z1 <= z0:
            return None
        out[0] = slice(z0, z1)
        return tuple(out)  # type: ignore[return-value]

    # --- shapes: each returns (box, weight in [0, 1]) with a soft edge of ``edge`` mm -------------------------
    def ellipsoid(self, center: npt.ArrayLike, axes: npt.ArrayLike, edge: float = 0.0) -> Shape:
        center, axes = np.asarray(center, float), np.asarray(axes, float)
        box = self.box(center - axes - edge, center + axes + edge)
        if box is None:
            return None, None
        z, y, x = self.coords(box)
        r = np.sqrt(((x - center[0]) / axes[0]) ** 2 + ((y - center[1]) / axes[1]) ** 2
                    + ((z - center[2]) / axes[2]) ** 2)
        return box, _soft(r, float(axes.min()), edge)

    def tube(self, p0: npt.ArrayLike, p1: npt.ArrayLike, r0: float, r1: float | None = None,
             edge: float = 0.0) -> Shape:
        """Capsule from p0 to p1 (x, y, z mm) whose radius tapers linearly from r0 to r1."""
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        r1 = r0 if r1 is None else r1
        rmax = max(r0, r1) + edge
        box = self.box(np.minimum(p0, p1) - rmax, np.maximum(p0, p1) + rmax)
        if box is None:
            return None, None
        z, y, x = self.coords(box)
        d = p1 - p0
        dx, dy, dz = x - p0[0], y - p0[1], z - p0[2]
        t = np.clip((dx * d[0] + dy * d[1] + dz * d[2]) / max(float(d @ d), 1e-9), 0.0, 1.0)
        dist = np.sqrt((dx - t * d[0]) ** 2 + (dy - t * d[1]) ** 2 + (dz - t * d[2]) ** 2)
        radius = r0 + t * (r1 - r0)
        return box, _soft(dist / radius, min(r0, r1), edge)

    # --- painting ---------------------------------------------------------------------------------------------
    def paint(self, box: Box | None, weight: npt.ArrayLike | None, value: npt.ArrayLike,
              organ: int | None = None, inside: Collection[int] | None = None) -> None:
        """Blend ``value`` into the HU volume with ``weight`` (bool or [0, 1]); label voxels with weight > 0.5.

        ``inside`` restricts the paint to voxels whose current organ code is in that collection.
        """
        if box is None:
            return
        w = np.asarray(weight, dtype=np.float32)
        if inside is not None:
            w = w * np.isin(self.organ[box], list(inside))
        hu = self.hu[box]
        self.hu[box] = hu + w * (np.asarray(value, dtype=np.float32) - hu)
        if organ is not None:
            lab = self.organ[box]
            lab[np.broadcast_to(w > 0.5, lab.shape)] = organ


def _soft(r: np.ndarray, size_mm: float, edge: float) -> np.ndarray:
    """Weight 1 inside the normalised radius 1, falling linearly to 0 over ``edge`` mm (partial volume)."""
    if edge <= 0:
        return (r <= 1.0).astype(np.float32)
    return np.clip((1.0 - r) * size_mm / edge + 0.5, 0.0, 1.0).astype(np.float32)

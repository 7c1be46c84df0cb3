"""3D patches on a fixed-mm grid inside the body/lung mask, with a location for every patch.

DrasCLR registers every scan to an atlas and cuts patches at fixed atlas positions, so a patch index means the
same anatomy in every patient and its atlas coordinate is the location fed to the conditional convolutions.
clearct does not register: it lays a grid with a fixed step in mm over the mask's bounding box, keeps the grid
points inside the mask, and gives each patch the location of its centre normalised to that bounding box,
``loc = 2 (c − lo) / (hi − lo) − 1`` ∈ [−1, 1]³ per axis (z, y, x). This is an affine, per-axis normalisation
of the lung (or body) extent — coarser than deformable atlas registration, but it needs no atlas and no tool.

Patches are resampled to ``patch_size``³ voxels of ``voxel_mm`` (isotropic) by trilinear interpolation
(``torch.nn.functional.grid_sample``) from the scan's own voxel grid; outside the scan reads as −1024 HU. The
same sampler draws the augmented training views: a random affine (rotation, scale, shift) bends the sampling grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from clearct.encoders.drasclr.mask import MaskKind, region_mask
from clearct.io.volume import CTVolume

AIR_HU = -1024.0
AFFINE_MARGIN = 1.25  # room around the mask for rotated / scaled training views


@dataclass(frozen=True)
class PatchSpec:
    """How patches are cut: the settings an encoder needs at extraction to see what it saw in training."""

    patch_size: int = 32
    voxel_mm: float = 1.0
    grid_mm: float = 20.0
    window: tuple[float, float] = (-1024.0, 240.0)  # the authors' clip, scaled to [-1, 1]
    window_name: str = "lung"
    mask: MaskKind = "lung"

    @property
    def extent_mm(self) -> float:
        return self.patch_size * self.voxel_mm


@dataclass
class ScanPatches:
    """The patch plan of one scan: a cropped int16 region and N patch centres with their locations.

    ``centers_vox`` are (z, y, x) voxel coordinates in the ``region`` array (the crop starts at ``origin`` of the
    full volume); ``center_mm`` is (patient z, y mm, x mm); ``loc`` the normalised location in [−1, 1]³.
    """

    region: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin: np.ndarray
    centers_vox: np.ndarray
    center_mm: np.ndarray
    loc: np.ndarray
    slice_index: np.ndarray
    mask_kind: MaskKind
    scan_id: str = ""
    patient_id: str = ""

    def __len__(self) -> int:
        return int(self.centers_vox.shape[0])


def grid_positions(lo_mm: float, hi_mm: float, step: float) -> np.ndarray:
    """Points every ``step`` mm over [lo, hi], centred so the margins on both sides are equal."""
    extent = hi_mm - lo_mm
    n = int(math.floor(extent / step)) + 1
    return lo_mm + (extent - (n - 1) * step) / 2 + step * np.arange(n)


def normalised_location(points_mm: np.ndarray, lo_mm: np.ndarray, hi_mm: np.ndarray) -> np.ndarray:
    """Map points to [−1, 1] per axis of the box [lo, hi] (a flat axis maps to 0)."""
    extent = np.maximum(hi_mm - lo_mm, 1e-6)
    return np.clip(2.0 * (points_mm - lo_mm) / extent - 1.0, -1.0, 1.0).astype(np.float32)


def plan_patches(volume: CTVolume, spec: PatchSpec) -> ScanPatches:
    """Mask the scan, lay the grid, keep grid points inside the mask, and crop the region the patches need."""
    region = region_mask(volume.hu, spec.mask)
    spacing = np.asarray(volume.spacing_mm, dtype=np.float64)
    lo_vox, hi_vox = region.bbox()
    lo_mm, hi_mm = lo_vox * spacing, hi_vox * spacing
    axes = [grid_positions(lo_mm[a], hi_mm[a], spec.grid_mm) for a in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)  # z-major: rows by slice
    vox = np.clip(np.rint(points / spacing).astype(np.int64), 0, np.array(volume.shape) - 1)
    inside = region.mask[vox[:, 0], vox[:, 1], vox[:, 2]]
    points, vox = points[inside], vox[inside]
    if len(points) == 0:
        raise ValueError(f"no {spec.grid_mm} mm grid point falls inside the {region.kind} mask")
    margin = np.ceil(AFFINE_MARGIN * math.sqrt(3) * spec.extent_mm / 2 / spacing).astype(np.int64)
    c_lo = np.maximum(lo_vox - margin, 0)
    c_hi = np.minimum(hi_vox + margin + 1, np.array(volume.shape))
    crop = volume.hu[c_lo[0] : c_hi[0], c_lo[1] : c_hi[1], c_lo[2] : c_hi[2]]
    center_vox = points / spacing
    z_mm = np.interp(center_vox[:, 0], np.arange(volume.shape[0]), volume.z_mm)
    return ScanPatches(
        region=np.ascontiguousarray(crop),
        spacing_mm=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin=c_lo,
        centers_vox=center_vox - c_lo,
        center_mm=np.column_stack([z_mm, points[:, 1], points[:, 2]]).astype(np.float32),
        loc=normalised_location(points, lo_mm, hi_mm),
        slice_index=vox[:, 0].astype(np.int32),
        mask_kind=region.kind,
        scan_id=volume.scan_id,
        patient_id=volume.patient_id,
    )


def nearest_neighbours(center_mm: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each patch's k nearest other patches (by centre distance), for the neighbour loss."""
    n = len(center_mm)
    if n <= k:
        raise ValueError(f"{n} patches cannot give {k} neighbours each")
    _, idx = cKDTree(center_mm).query(center_mm, k=k + 1)
    return idx[:, 1:].astype(np.int64)


def window_unit(hu: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """Clip HU to the window and scale to [−1, 1] (the authors' input range)."""
    lo, hi = window
    return 2.0 * (hu.clamp(lo, hi) - lo) / (hi - lo) - 1.0


def _patch_offsets(spec: PatchSpec) -> np.ndarray:
    """(P³, 3) mm offsets (z, y, x) of the patch voxels from its centre."""
    p = spec.patch_size
    ticks = (np.arange(p, dtype=np.float32) - (p - 1) / 2) * np.float32(spec.voxel_mm)
    return np.stack(np.meshgrid(ticks, ticks, ticks, indexing="ij"), axis=-1).reshape(-1, 3)


def sample_patches(
    scan: ScanPatches, index: np.ndarray, spec: PatchSpec, affines: torch.Tensor | None = None
) -> torch.Tensor:
    """Resample patches ``index`` of ``scan`` to (n, 1, P, P, P) in [−1, 1].

    ``affines`` (n, 3, 4) maps the patch's mm offsets (z, y, x) to offsets in the scan: [A | t] with t in mm;
    None samples the plain axis-aligned patch. Only a small block around each patch is read from ``region``,
    so the region may be a memory-mapped array. The coordinates are computed in numpy: these arrays are small,
    and torch's multi-threaded kernels for them stall when other processes hold the cores.
    """
    p = spec.patch_size
    offsets = _patch_offsets(spec)
    spacing = np.asarray(scan.spacing_mm, dtype=np.float32)
    shape = np.array(scan.region.shape)
    aff = None if affines is None else affines.detach().cpu().numpy().astype(np.float32)
    out = []
    for j, i in enumerate(np.asarray(index)):
        off = offsets if aff is None else offsets @ aff[j, :, :3].T + aff[j, :, 3]
        vox = scan.centers_vox[i].astype(np.float32) + off / spacing
        lo = np.clip(np.floor(vox.min(0)).astype(np.int64) - 1, 0, shape - 1)
        hi = np.clip(np.ceil(vox.max(0)).astype(np.int64) + 2, lo + 1, shape)
        block = np.asarray(scan.region[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
        block -= AIR_HU  # zero padding outside the scan then reads as air
        size = np.array(block.shape, dtype=np.float32)
        grid = 2.0 * (vox - lo.astype(np.float32)) / np.maximum(size - 1, 1) - 1.0
        grid = torch.from_numpy(np.ascontiguousarray(grid[:, ::-1])).reshape(1, p, p, p, 3)  # (x, y, z) order
        hu = F.grid_sample(torch.from_numpy(block)[None, None], grid, mode="bilinear", padding_mode="zeros",
                           align_corners=True)
        out.append(hu[0] + AIR_HU)
    return window_unit(torch.stack(out), spec.window)


def random_affines(
    n: int, generator: torch.Generator, *, max_degrees: float = 10.0, scale: tuple[float, float] = (0.9, 1.1),
    shift_mm: float = 2.0,
) -> torch.Tensor:
    """(n, 3, 4) random rotations (about each axis up to ``max_degrees``), isotropic scales and shifts."""
    angles = (torch.rand(n, 3, generator=generator) * 2 - 1) * math.radians(max_degrees)
    c, s = angles.cos(), angles.sin()
    one, zero = torch.ones(n), torch.zeros(n)

    def rot(a: int, b: int) -> torch.Tensor:  # rotation in the (a, b) plane by angle index 3 - a - b
        k = 3 - a - b
        m = torch.stack([one, zero, zero, zero, one, zero, zero, zero, one], 1).reshape(n, 3, 3).clone()
        m[:, a, a], m[:, a, b], m[:, b, a], m[:, b, b] = c[:, k], -s[:, k], s[:, k], c[:, k]
        return m

    lo, hi = scale
    zoom = lo + (hi - lo) * torch.rand(n, 1, 1, generator=generator)
    a = rot(1, 2) @ rot(0, 2) @ rot(0, 1) * zoom
    t = (torch.rand(n, 3, generator=generator) * 2 - 1) * shift_mm
    return torch.cat([a, t[:, :, None]], dim=2)

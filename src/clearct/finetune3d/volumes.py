"""Whole scans → model input of the 3D baseline: a fixed voxel grid around the body, HU windows as channels.

Per scan, once (then cached): the body is found (voxels above ``body_hu``; its 0.5–99.5 % extent per axis, so
noise specks and the table edge barely move it), and the scan is resampled onto a ``grid`` of (z, y, x) voxels
centred on the body, either at a fixed ``spacing_mm`` (what lies outside the grid is cropped, what the scan lacks
is padded with air) or, with ``spacing_mm=None``, at the spacing that fits the body's extent into the grid (one
in-plane spacing for y and x, so shapes keep their aspect). Downsampling averages over whole source voxels first
(anti-aliasing), then samples trilinearly. The cache holds this grid as int16 HU; the windows are applied per
batch, so one cache serves every choice of windows.

The settings travel with every fold model (:class:`VolumePrep` in ``model.json``), so deploy prepares an external
cohort's scans exactly as the training scans were prepared.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from clearct.common.atomic import atomic_path
from clearct.io.volume import CTVolume
from clearct.preprocess.windows import window_hu

LOG = logging.getLogger("clearct")
AIR_HU = -1024
FIT_MARGIN = 1.05  # fitted grids leave 2.5 % of air on each side, so the body never touches the border


@dataclass(frozen=True)
class VolumePrep:
    grid: tuple[int, int, int]  # (z, y, x) voxels
    spacing_mm: tuple[float, float, float] | None  # (z, y, x); None: fit the body box into the grid
    windows: tuple[tuple[str, float, float], ...]  # one input channel per window
    body_hu: float = -500.0

    def to_json(self) -> dict:
        return {"grid": list(self.grid), "spacing_mm": None if self.spacing_mm is None else list(self.spacing_mm),
                "windows": [list(w) for w in self.windows], "body_hu": self.body_hu}

    @classmethod
    def from_json(cls, d: dict) -> VolumePrep:
        spacing = d.get("spacing_mm")
        return cls(as_grid(d["grid"]), None if spacing is None else as_spacing(spacing),
                   tuple((str(n), float(lo), float(hi)) for n, lo, hi in d["windows"]), float(d["body_hu"]))

    @property
    def cache_key(self) -> str:
        """What the cached grid depends on (not the windows: they are applied per batch)."""
        d = {k: v for k, v in self.to_json().items() if k != "windows"}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def as_grid(sizes: Sequence[int]) -> tuple[int, int, int]:
    """(z, y, x) voxel counts; ValueError unless there are three."""
    z, y, x = sizes
    return int(z), int(y), int(x)


def as_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    """(z, y, x) mm; ValueError unless there are three."""
    z, y, x = spacing
    return float(z), float(y), float(x)


def body_box(hu: np.ndarray, body_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre and extent (in voxels, per axis z, y, x) of the voxels above ``body_hu``; the whole scan when none."""
    mask = hu > body_hu
    shape = np.array(hu.shape, np.float64)
    if not mask.any():
        return (shape - 1) / 2, shape
    first, last = [], []
    for axis in range(3):
        counts = mask.sum(axis=tuple(a for a in range(3) if a != axis))
        cdf = np.cumsum(counts) / counts.sum()
        first.append(np.searchsorted(cdf, 0.005))
        last.append(np.searchsorted(cdf, 0.995))
    lo, hi = np.array(first, np.float64), np.array(last, np.float64)
    return (lo + hi) / 2, hi - lo + 1


def output_spacing(volume: CTVolume, prep: VolumePrep, extent: np.ndarray) -> np.ndarray:
    """Voxel size (mm) of the grid: the fixed spacing, or the one that fits the body extent into the grid."""
    if prep.spacing_mm is not None:
        return np.array(prep.spacing_mm, np.float64)
    src = np.array(volume.spacing_mm, np.float64)
    need = FIT_MARGIN * extent * src / np.array(prep.grid, np.float64)
    in_plane = max(need[1], need[2])
    return np.maximum(np.array([need[0], in_plane, in_plane]), 1e-3)


def to_grid(volume: CTVolume, prep: VolumePrep) -> np.ndarray:
    """The scan on ``prep``'s grid: int16 HU (z, y, x), air outside the scan."""
    src = np.array(volume.spacing_mm, np.float64)
    centre, extent = body_box(volume.hu, prep.body_hu)
    step = output_spacing(volume, prep, extent) / src  # source voxels per output voxel, per axis
    # shifted so that zero padding is air
    x = torch.from_numpy(volume.hu).float().clamp_(min=AIR_HU).sub_(AIR_HU)[None, None]
    pool = np.maximum(np.floor(step), 1).astype(int)
    if (pool > 1).any():  # anti-aliasing: mean over whole source voxels before sampling
        x = F.avg_pool3d(x, kernel_size=tuple(pool), stride=tuple(pool), ceil_mode=True)
    axes = []
    for a in range(3):
        pos = centre[a] + (np.arange(prep.grid[a]) - (prep.grid[a] - 1) / 2) * step[a]  # source voxel coords
        pos = (pos - (pool[a] - 1) / 2) / pool[a]  # → coords of the pooled volume
        n = x.shape[2 + a]
        axes.append(torch.from_numpy(2 * pos / max(n - 1, 1) - 1).float())
    gz, gy, gx = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack([gx, gy, gz], dim=-1)[None]  # grid_sample wants (x, y, z) = (W, H, D) order
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
    return out.add_(AIR_HU).round_().clamp_(-32768, 32767).to(torch.int16).numpy()


def channels(hu: torch.Tensor, windows: Sequence[tuple[str, float, float]]) -> torch.Tensor:
    """(B, D, H, W) HU → (B, C, D, H, W) float in [0, 1], one channel per window."""
    return torch.stack([window_hu(hu, lo, hi) for _, lo, hi in windows], dim=1)


def augment(hu: torch.Tensor, rng: np.random.Generator, *, shift: Sequence[int], hu_sd: float = 15.0,
            scale_sd: float = 0.03) -> torch.Tensor:
    """Light 3D augmentation of a (B, D, H, W) HU batch: a random translation of up to ``shift`` voxels per axis
    (air comes in at the border) and a small HU scale and offset per scan. No flips: left and right differ in
    CT anatomy (liver, spleen), and labels can depend on the side."""
    out = torch.empty_like(hu, dtype=torch.float32)
    pad = [p for s in reversed(shift) for p in (s, s)]
    padded = F.pad(hu.float(), pad, value=float(AIR_HU))
    dims = hu.shape[1:]
    for i in range(hu.shape[0]):
        o = [int(rng.integers(0, 2 * s + 1)) for s in shift]
        crop = padded[i, o[0]:o[0] + dims[0], o[1]:o[1] + dims[1], o[2]:o[2] + dims[2]]
        out[i] = crop * (1.0 + rng.normal(0.0, scale_sd)) + rng.normal(0.0, hu_sd)
    return out


class ScanRef(Protocol):
    """What the cache needs of an item: its scan id, path and series (scans.csv's ``series_uid``)."""

    scan_id: str
    path: Path
    series: str | None


ScanT = TypeVar("ScanT", bound=ScanRef)


class VolumeCache:
    """Grids of a cohort's scans: in memory for the run, and on disk (``<folder>/<cache_key>/``) for later runs
    and other tasks on the same cohort. A file name carries the scan id and a hash of its path."""

    def __init__(self, folder: Path, prep: VolumePrep):
        self.folder = Path(folder) / prep.cache_key
        self.prep = prep

    def file(self, scan_id: str, path: Path, series: str | None = None) -> Path:
        tag = hashlib.sha1(str(path).encode() + (f"|series={series}".encode() if series else b"")).hexdigest()[:8]
        return self.folder / f"{scan_id}-{tag}.npy"

    def load(self, items: Sequence[ScanT], *, workers: int = 2) -> list[tuple[ScanT, np.ndarray | Exception]]:
        """``(item, grid or the exception that stopped it)`` for every item (``item.scan_id``, ``item.path``,
        ``item.series``)."""
        from clearct.common.prefetch import read_ahead
        from clearct.io import read_ct

        self.folder.mkdir(parents=True, exist_ok=True)
        expected = tuple(self.prep.grid)

        def one(item: ScanT) -> np.ndarray:
            f = self.file(item.scan_id, item.path, item.series)
            if f.is_file():
                try:
                    grid = np.load(f, allow_pickle=False)
                    if grid.shape == expected and grid.dtype == np.int16:
                        return grid
                except (OSError, ValueError) as exc:
                    LOG.warning("%s: unreadable cache file (%s); reading the scan again", f, exc)
            grid = to_grid(read_ct(item.path, series=item.series), self.prep)
            with atomic_path(f, suffix=".npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, grid, allow_pickle=False)
            return grid

        results = []
        bar = tqdm(total=len(items), desc="volumes", unit="scan", leave=False)
        for item, grid in read_ahead(one, items, workers):
            results.append((item, grid))
            bar.update()
        bar.close()
        return results

"""Slice cache: every scan decoded once into a memory-mapped int16 ``.npy`` so that a random slice is one small read.

Layout of a cache folder (``--cache-dir``, default ``RUN/slice-cache``)::

    <scan_id>-<key>.npy    int16 (Z, Y, X) Hounsfield units, the reader's slice order
    <scan_id>-<key>.json   scan_id, patient_id, source path, shape, spacing_mm

``key`` hashes the resolved source path with the size and modification time of every file in it, so an entry is
reused while its source is unchanged and rebuilt (under a new name) when it changes; stale entries are harmless and
may be deleted. Both files are written atomically, so an interrupted build resumes where it stopped. Several runs
(and torchrun ranks, after rank 0 built it) share one cache. Lesion boxes are not stored: the slice index joining
the cache with ``lesions.csv`` is cheap and built in memory each run (:func:`build_index`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clearct.common.atomic import atomic_path, atomic_write_text
from clearct.common.errors import ClearctError
from clearct.common.failures import SHOWN, Failures
from clearct.io import CTVolume, LesionBox, ScanRecord

LOG = logging.getLogger("clearct")


def source_key(path: str | Path, series: str | None = None) -> str:
    """Hash of a scan source (file or folder, and the series chosen in it): resolved path + (name, size, mtime) of
    every file in it."""
    path = Path(path).resolve()
    if not path.exists():
        raise ClearctError("scan not found", path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256(str(path).encode() + (f"|series={series}".encode() if series else b""))
    for f in files:
        st = f.stat()
        digest.update(f"{f.relative_to(path) if path.is_dir() else f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CachedScan:
    scan_id: str
    patient_id: str
    source: str
    array: Path
    shape: tuple[int, int, int]


@dataclass
class SliceCache:
    """The cached scans; :meth:`slice` reads one (Y, X) int16 slice through a lazily opened memory map."""

    scans: list[CachedScan]
    skipped: list[str] = field(default_factory=list)
    _maps: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def slice(self, scan: int, z: int) -> np.ndarray:
        if scan not in self._maps:
            self._maps[scan] = np.load(self.scans[scan].array, mmap_mode="r")
        return np.array(self._maps[scan][z])

    def __getstate__(self) -> dict:
        # memory maps are reopened in each DataLoader worker
        return {"scans": self.scans, "skipped": self.skipped, "_maps": {}}

    @property
    def num_slices(self) -> int:
        return sum(s.shape[0] for s in self.scans)


def _cache_one(record: ScanRecord, root: Path, reader: Callable[[ScanRecord], CTVolume]) -> CachedScan:
    stem = root / f"{record.scan_id}-{source_key(record.path, record.series)}"
    meta_file, array_file = stem.with_suffix(".json"), stem.with_suffix(".npy")
    if not (meta_file.exists() and array_file.exists()):
        volume = reader(record)
        hu = np.ascontiguousarray(volume.hu, dtype=np.int16)
        if hu.ndim != 3 or min(hu.shape) < 1:
            raise ClearctError(f"expected a (Z, Y, X) volume, got shape {hu.shape}", record.path)
        with atomic_path(array_file, suffix=".npy") as tmp:
            np.save(tmp, hu)
        meta = {"scan_id": record.scan_id, "patient_id": record.patient_id, "source": str(record.path),
                "shape": list(hu.shape), "spacing_mm": [float(s) for s in volume.spacing_mm]}
        atomic_write_text(meta_file, json.dumps(meta, indent=1))
    meta = json.loads(meta_file.read_text())
    return CachedScan(record.scan_id, record.patient_id, meta["source"], array_file, tuple(meta["shape"]))


def build_cache(
    records: Sequence[ScanRecord], root: str | Path, *, reader: Callable[[ScanRecord], CTVolume] | None = None,
    progress: bool = True,
) -> SliceCache:
    """Cache every scan of ``records`` in ``root`` (reusing valid entries; ``reader`` reads one row of scans.csv,
    its series included); a scan that fails gets one line (on the terminal when ``progress``, always in the log)
    and is skipped."""
    if reader is None:
        from clearct.io import read_scan

        reader = read_scan
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    scans, failures = [], Failures("pretrain", shown=SHOWN if progress else 0)
    for record in tqdm(records, desc="slice cache", disable=not progress):
        try:
            scans.append(_cache_one(record, root, reader))
        except (ClearctError, OSError, ValueError) as exc:
            failures.add(record.scan_id, record.path, exc)
    if not scans:
        raise ClearctError("no scan could be read for pretraining (see the lines above)", root)
    return SliceCache(scans, [r["scan_id"] for r in failures.rows])


@dataclass(frozen=True)
class SliceIndex:
    """Every slice of the cache: its scan (position in ``cache.scans``), slice number, lesion boxes and targets.

    ``boxes`` holds the key-slice boxes (what LECL crops around). ``targets`` (N, L) marks, per label of
    ``label_names``, every slice a lesion covers — its ``slice_first..slice_last`` extent where lesions.csv has it,
    else its key slice — for the supervised ceiling. ``annotated`` marks the slices of scans with at least one row
    in lesions.csv: a scan without rows may be healthy or merely unannotated, so it carries no slice targets.
    """

    scan: np.ndarray  # (N,) int32
    z: np.ndarray  # (N,) int32
    boxes: dict[int, list[tuple[float, float, float, float]]]  # row → boxes (key slices only)
    targets: np.ndarray | None = None  # (N, L) float32
    label_names: tuple[str, ...] = ()
    annotated: np.ndarray | None = None  # (N,) bool

    def __len__(self) -> int:
        return len(self.scan)

    @property
    def num_lesion_slices(self) -> int:
        return len(self.boxes)

    @property
    def lesion_rows(self) -> np.ndarray:
        """Rows of the key slices (LECL's lesion crops)."""
        return np.array(sorted(self.boxes), dtype=np.int64)

    @property
    def covered_rows(self) -> np.ndarray:
        """Rows of every slice a lesion covers (positives of the supervised ceiling)."""
        if self.targets is None:
            return self.lesion_rows
        return np.flatnonzero(self.targets.any(axis=1))


def build_index(cache: SliceCache, lesions: Sequence[LesionBox] = (), *, source: str | os.PathLike = "") -> SliceIndex:
    """Index all cached slices and attach lesion boxes (clipped to the slice), extents and per-label targets;
    boxes that match no slice are logged."""
    scan = np.concatenate([np.full(s.shape[0], i, np.int32) for i, s in enumerate(cache.scans)])
    z = np.concatenate([np.arange(s.shape[0], dtype=np.int32) for s in cache.scans])
    starts = np.cumsum([0] + [s.shape[0] for s in cache.scans])
    position = {s.scan_id: i for i, s in enumerate(cache.scans)}
    label_names = tuple(sorted({box.label for box in lesions}))
    targets = np.zeros((len(scan), len(label_names)), np.float32)
    annotated_scans = np.zeros(len(cache.scans), bool)
    boxes: dict[int, list[tuple[float, float, float, float]]] = {}
    unmatched = 0
    for box in lesions:
        i = position.get(box.scan_id)
        if i is None or not 0 <= box.slice_index < cache.scans[i].shape[0]:
            unmatched += 1
            continue
        depth, height, width = cache.scans[i].shape
        x1, x2 = sorted((min(max(box.x1, 0), width), min(max(box.x2, 0), width)))
        y1, y2 = sorted((min(max(box.y1, 0), height), min(max(box.y2, 0), height)))
        boxes.setdefault(int(starts[i] + box.slice_index), []).append((x1, y1, x2, y2))
        first, last = box.extent
        targets[starts[i] + first : starts[i] + min(last, depth - 1) + 1, label_names.index(box.label)] = 1.0
        annotated_scans[i] = True
    if unmatched:
        LOG.warning("%s: %d lesion boxes match no cached scan/slice and are ignored", source or "lesions", unmatched)
    return SliceIndex(scan, z, boxes, targets, label_names, annotated_scans[scan])

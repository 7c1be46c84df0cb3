"""Slice cache: every scan decoded once into a file from which one random slice is one small read.

Layout of a cache folder (``--cache-dir``, default ``RUN/slice-cache``)::

    <scan_id>-<key>.zst    (``--cache-format zstd``, the default) one compressed frame per slice, in the reader's
                           slice order: int16 HU, each row differenced along x, zigzag-mapped to unsigned, the two
                           bytes of every value split into two planes, zstd level 1 (lossless; a third of the int16
                           size on real CT, docs/scale.md)
    <scan_id>-<key>.npy    (``--cache-format npy``) int16 (Z, Y, X), memory-mapped when read
    <scan_id>-<key>.json   scan_id, patient_id, source path, shape, spacing_mm (and the frame offsets for .zst)

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
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from clearct.common.atomic import atomic_path, atomic_write_text
from clearct.common.errors import ClearctError
from clearct.common.failures import SHOWN, Failures
from clearct.io import CTVolume, LesionBox, ScanRecord

LOG = logging.getLogger("clearct")
CacheFormat = Literal["zstd", "npy"]
ZSTD_LEVEL = 1  # level 3–9 saves < 2 % more on CT and compresses 1.5–4× slower (measured, docs/scale.md)


_CODEC = threading.local()  # one zstd (de)compressor per thread: they are not shareable between threads


def _codec(kind: str) -> Any:
    import zstandard

    if not hasattr(_CODEC, kind):
        setattr(_CODEC, kind, zstandard.ZstdCompressor(level=ZSTD_LEVEL) if kind == "c" else
                zstandard.ZstdDecompressor())
    return getattr(_CODEC, kind)


def encode_slice(plane: np.ndarray) -> bytes:
    """One int16 (Y, X) slice → a zstd frame (x-difference, zigzag, byte planes; exactly invertible)."""
    hu = np.ascontiguousarray(plane, dtype=np.int16)
    diff = hu.copy()
    np.subtract(hu[:, 1:], hu[:, :-1], out=diff[:, 1:])  # int16 arithmetic wraps; the cumsum below unwraps it
    zig = ((diff << 1) ^ (diff >> 15)).astype("<u2")  # small magnitudes of either sign → small unsigned values
    planes = np.ascontiguousarray(zig.view(np.uint8).reshape(-1, 2).T)  # low bytes, then high bytes (mostly 0)
    return _codec("c").compress(planes.tobytes())


def decode_slice(frame: bytes, shape: tuple[int, int]) -> np.ndarray:
    """The int16 (Y, X) slice of :func:`encode_slice`."""
    raw = np.frombuffer(_codec("d").decompress(frame), np.uint8)
    n = shape[0] * shape[1]
    zig = np.empty(n, "<u2")
    zig.view(np.uint8)[0::2], zig.view(np.uint8)[1::2] = raw[:n], raw[n:]
    diff = ((zig >> 1) ^ -(zig & 1)).view(np.int16).reshape(shape)
    return np.cumsum(diff, axis=1, dtype=np.int16)  # wraps like the int16 differences did: exact


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
    offsets: tuple[int, ...] = ()  # .zst: where frame z starts (z + 1: where it ends)


OPEN_FILES = 64  # compressed scans kept open per process (a DataLoader worker draws from every scan)


@dataclass
class SliceCache:
    """The cached scans; :meth:`slice` reads one (Y, X) int16 slice: a memory map of a ``.npy``, or one frame of a
    ``.zst`` read from a file handle (at most :data:`OPEN_FILES` kept open)."""

    scans: list[CachedScan]
    skipped: list[str] = field(default_factory=list)
    _maps: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _files: dict[int, int] = field(default_factory=dict, repr=False)  # scan → file descriptor

    def slice(self, scan: int, z: int) -> np.ndarray:
        entry = self.scans[scan]
        if entry.offsets:
            fd = self._files.pop(scan, None)
            self._files[scan] = os.open(entry.array, os.O_RDONLY) if fd is None else fd  # most recently used last
            if len(self._files) > OPEN_FILES:
                os.close(self._files.pop(next(iter(self._files))))
            # pread: no shared file offset, so forked DataLoader workers may read through inherited descriptors
            frame = os.pread(self._files[scan], entry.offsets[z + 1] - entry.offsets[z], entry.offsets[z])
            return decode_slice(frame, (entry.shape[1], entry.shape[2]))
        if scan not in self._maps:
            self._maps[scan] = np.load(entry.array, mmap_mode="r")
        return np.array(self._maps[scan][z])

    def __getstate__(self) -> dict:
        # memory maps and files are reopened in each DataLoader worker
        return {"scans": self.scans, "skipped": self.skipped, "_maps": {}, "_files": {}}

    @property
    def num_slices(self) -> int:
        return sum(s.shape[0] for s in self.scans)


def _write_frames(hu: np.ndarray, path: Path) -> list[int]:
    """Write one :func:`encode_slice` frame per slice to ``path``; returns the offsets (Z + 1)."""
    offsets = [0]
    with atomic_path(path, suffix=".zst") as tmp, open(tmp, "wb") as out:
        for plane in hu:
            frame = encode_slice(plane)
            out.write(frame)
            offsets.append(offsets[-1] + len(frame))
    return offsets


def _cache_one(record: ScanRecord, root: Path, reader: Callable[[ScanRecord], CTVolume],
               fmt: CacheFormat) -> CachedScan:
    stem = root / f"{record.scan_id}-{source_key(record.path, record.series)}"
    meta_file, array_file = stem.with_suffix(".json"), stem.with_suffix(".zst" if fmt == "zstd" else ".npy")
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if not (array_file.exists() and meta.get("format", "npy") == fmt):
        volume = reader(record)
        hu = np.ascontiguousarray(volume.hu, dtype=np.int16)
        if hu.ndim != 3 or min(hu.shape) < 1:
            raise ClearctError(f"expected a (Z, Y, X) volume, got shape {hu.shape}", record.path)
        meta = {"scan_id": record.scan_id, "patient_id": record.patient_id, "source": str(record.path),
                "shape": list(hu.shape), "spacing_mm": [float(s) for s in volume.spacing_mm], "format": fmt}
        if fmt == "zstd":
            meta["offsets"] = _write_frames(hu, array_file)
        else:
            with atomic_path(array_file, suffix=".npy") as tmp:
                np.save(tmp, hu)
        atomic_write_text(meta_file, json.dumps(meta, indent=1))
    return CachedScan(record.scan_id, record.patient_id, meta["source"], array_file, tuple(meta["shape"]),
                      tuple(meta.get("offsets", ())))


def build_cache(
    records: Sequence[ScanRecord], root: str | Path, *, reader: Callable[[ScanRecord], CTVolume] | None = None,
    progress: bool = True, fmt: CacheFormat = "zstd",
) -> SliceCache:
    """Cache every scan of ``records`` in ``root`` as ``fmt`` (reusing valid entries; ``reader`` reads one row of
    scans.csv, its series included); a scan that fails gets one line (on the terminal when ``progress``, always in
    the log) and is skipped."""
    if reader is None:
        from clearct.io import read_scan

        reader = read_scan
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    scans, failures = [], Failures("pretrain", shown=SHOWN if progress else 0)
    for record in tqdm(records, desc="slice cache", disable=not progress):
        try:
            scans.append(_cache_one(record, root, reader, fmt))
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

"""Bags: one per feature file, joined with its label row; in memory, or read on demand through a bounded cache.

With ``cache_bytes`` a bag's feature matrix is a :class:`LazyFeats`: read from its h5 file when a batch needs it and
kept in a :class:`FeatureCache` of at most that many bytes (least recently used out), as STAMP reads bags. It holds
the same values as the in-memory matrix (same rows, same dtype), so training and inference give the same results;
memory is bounded by the cache instead of growing as bags × instances × dim.

Every problem with the input (a label row without a feature file, a feature file without a label row, an
unknown label value, NaN in the features, an empty bag, an unreadable file) is reported once as one line naming
the file; the affected rows are left out, the rest goes on, and :class:`Issues` counts them for the summary.
Unusable files and label values are failures (``failures.csv``, exit code 1 of the command); rows that only lack
their counterpart (a feature file without a label row) are warnings. Features of a random-init encoder are
announced as a warning too.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from clearct.common.errors import ClearctError
from clearct.common.failures import Issues
from clearct.io.features import ScanFeatures, read_feature_matrix, read_features
from clearct.io.tables import LabelTable
from clearct.modeling.labels import LabelJoin
from clearct.modeling.tasks import TaskSpec

LOG = logging.getLogger("clearct")


def gigabytes(value: float | None) -> int | None:
    """``--feature-memory-gb`` in bytes (None stays None: every bag in memory)."""
    return None if value is None else int(value * 1e9)


def outside_heap(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An array in its own anonymous memory map. Freeing it returns its pages to the system at once, so a cache
    that keeps replacing matrices of different sizes does not fragment the heap (the ``clearct`` command tunes
    glibc to keep freed heap memory for reuse, and mixed sizes then grew the process by gigabytes)."""
    count = int(np.prod(shape))
    return np.frombuffer(mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1)), dtype, count).reshape(shape)


def _cast(feats: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``feats.astype(dtype)`` into an array outside the heap (the same values: numpy's cast)."""
    out = outside_heap(feats.shape, dtype)
    np.copyto(out, feats, casting="unsafe")
    return out


class FeatureCache:
    """Feature matrices by file, the most recently used kept while they total at most ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes, self.reads = max_bytes, 0, 0
        self._items: OrderedDict[Path, np.ndarray] = OrderedDict()

    def get(self, lazy: LazyFeats) -> np.ndarray:
        hit = self._items.get(lazy.path)
        if hit is not None:
            self._items.move_to_end(lazy.path)
            return hit
        feats = read_feature_matrix(lazy.path, out=outside_heap)
        if lazy.rows is not None:
            feats = np.take(feats, lazy.rows, axis=0, out=outside_heap((len(lazy.rows), feats.shape[1]), feats.dtype))
        if feats.dtype != lazy.dtype:
            feats = _cast(feats, lazy.dtype)
        if feats.shape != lazy.shape:
            raise ClearctError(f"feature file changed while in use ({feats.shape} rows × dims, was {lazy.shape})",
                               lazy.path)
        self.reads += 1
        self._items[lazy.path] = feats
        self.bytes += feats.nbytes
        while self.bytes > self.max_bytes and len(self._items) > 1:
            self.bytes -= self._items.popitem(last=False)[1].nbytes
        return feats


@dataclass(frozen=True)
class LazyFeats:
    """A bag's (N, D) feature matrix left in its h5 file: indexing or ``np.asarray`` reads it through the cache."""

    path: Path
    rows: np.ndarray | None  # the rows kept (window selection); None: all
    shape: tuple[int, int]
    dtype: np.dtype
    cache: FeatureCache

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        feats = self.cache.get(self)
        return feats if dtype is None else feats.astype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.cache.get(self)[index]

    def __len__(self) -> int:
        return self.shape[0]

    def astype(self, dtype: Any, copy: bool = True) -> np.ndarray:
        return self.cache.get(self).astype(dtype, copy=copy)


@dataclass
class Bag:
    """One scan: its instances (float16 to halve memory; batches are cast to float32) and its label."""

    scan_id: str
    patient_id: str
    feats: np.ndarray | LazyFeats  # (N, D) float16 or float32
    window: np.ndarray  # (N,) int64
    slice_index: np.ndarray  # (N,) int32
    z_mm: np.ndarray  # (N,) float32
    y: np.ndarray  # (k,) float32; empty when unlabelled (predict)
    path: Path | None = None

    def __len__(self) -> int:
        return int(self.feats.shape[0])


@dataclass
class Cohort:
    """The usable bags plus what the feature files agree on (encoder, windows, dimension)."""

    bags: list[Bag]
    embed_dim: int
    windows: list[list]
    encoder: dict
    issues: Issues


def _window_positions(f: ScanFeatures, names: list[str]) -> np.ndarray:
    """For each row of ``f``: the position of its window in ``names``, or −1; ValueError naming missing windows."""
    have = [str(w[0]) for w in f.windows]
    missing = [n for n in names if n not in have]
    if missing:
        raise ValueError(f"no {', '.join(missing)} window (the file has {', '.join(have)})")
    position = np.full(len(have), -1, np.int64)
    position[[have.index(n) for n in names]] = np.arange(len(names))
    return position[f.window]


def select_windows(f: ScanFeatures, names: list[str]) -> ScanFeatures:
    """The rows of ``f`` whose HU window is named in ``names``, window indices renumbered to positions in
    ``names``; raises ValueError naming the windows the file lacks."""
    have = [str(w[0]) for w in f.windows]
    position = _window_positions(f, names)
    keep = position >= 0
    return replace(f, feats=f.feats[keep], slice_index=f.slice_index[keep], z_mm=f.z_mm[keep],
                   window=position[keep], windows=[f.windows[have.index(n)] for n in names],
                   extra={k: v[keep] if np.shape(v)[:1] == keep.shape else v for k, v in f.extra.items()})


def feature_files(features: Path) -> list[Path]:
    """The ``*.h5`` files of a features folder; ClearctError when there is none (or no such folder)."""
    features = Path(features)
    if not features.is_dir():
        raise ClearctError("no <scan_id>.h5 feature files found (no such folder)", features)
    files = sorted(features.glob("*.h5"))
    if not files:
        raise ClearctError("no <scan_id>.h5 feature files found", features)
    return files


def load_cohort(features: Path, labels: LabelTable | None, spec: TaskSpec | None, *, labels_path: Path | None = None,
                dtype: type = np.float16, issues: Issues | None = None, windows: list[str] | None = None,
                cache_bytes: int | None = None) -> Cohort:
    """Read every ``*.h5`` in ``features`` and join it with ``labels`` (by patient_id or scan_id).

    ``cache_bytes``: keep the feature matrices in the files and read them through a :class:`FeatureCache` of that
    size (every file is still read once here, to validate it); None keeps them all in memory.

    ``labels=None`` loads unlabelled bags (prediction). ``windows`` keeps only the instances of those HU windows
    (a file without one of them is left out with an issue). Raises ClearctError only when nothing usable remains
    or the files disagree on the encoder or the embedding size.
    """
    features = Path(features)
    issues = issues or Issues()
    files = feature_files(features)
    join = None
    if labels is not None:
        assert spec is not None, "a label table is read for a task"
        join = LabelJoin(labels, spec, labels_path, issues, noun="feature file", kind="features")
    bags: list[Bag] = []
    first: tuple[int, list[list], dict[str, Any], Path] | None = None  # embed_dim, windows, encoder, file
    broken: set[str] = set()  # stems of files already reported (their label rows are not reported again)
    cache = FeatureCache(cache_bytes) if cache_bytes is not None else None
    for path in tqdm(files, desc="reading features", unit="scan", leave=False):
        try:
            f = read_features(path)
        except ClearctError as exc:
            kind = "nan_features" if "NaN" in str(exc) else "unreadable_features"
            issues.add(kind, f"{exc}; scan left out", item=path.stem, path=path)
            broken.add(path.stem)
            with contextlib.suppress(ClearctError):  # the ids, when the header is intact (NaN in feats)
                head = read_features(path, load_feats=False)
                broken.update((head.scan_id, head.patient_id))
            continue
        rows = None
        if windows:
            try:
                rows = np.flatnonzero(_window_positions(f, windows) >= 0)
                f = select_windows(f, windows)
            except ValueError as exc:
                issues.add("missing_window", f"{path}: {exc}; scan left out", item=f.scan_id, path=path)
                broken.update((path.stem, f.scan_id, f.patient_id))
                continue
        if len(f) == 0:
            issues.add("empty_bag", f"{path}: empty bag (0 instances); scan left out", item=f.scan_id, path=path)
            broken.update((path.stem, f.patient_id))
            continue
        meta: dict[str, Any] = {"encoder": f.encoder, "weights_sha256": f.weights_sha256,
                                "image_size": f.image_size}
        if first is None:
            first = (f.embed_dim, [list(w) for w in f.windows], meta, path)
        elif (f.embed_dim, meta) != (first[0], first[2]):  # one encoder (name and weights) at one size
            raise ClearctError(f"features from {f.encoder} ({f.weights_sha256[:12]}, {f.embed_dim}-d, {f.image_size} "
                               f"px) do not match {first[3].name} ({first[2]['encoder']}, "
                               f"{first[2]['weights_sha256'][:12]}, {first[0]}-d, {first[2]['image_size']} px)", path)
        y = np.zeros(0, np.float32) if join is None else join.label(f.scan_id, f.patient_id)
        if y is None:
            continue
        feats: np.ndarray | LazyFeats = f.feats.astype(dtype, copy=False)
        if cache is not None:
            feats = LazyFeats(path, rows, (int(f.feats.shape[0]), int(f.feats.shape[1])), np.dtype(dtype), cache)
        bags.append(Bag(f.scan_id, f.patient_id, feats, f.window.astype(np.int64),
                        f.slice_index.astype(np.int32), f.z_mm.astype(np.float32), y, path))
    if join is not None:
        join.finish(features, broken)
    if not bags:
        raise ClearctError("no usable scans (see the warnings above)", features)
    assert first is not None  # set by the first bag
    if first[2]["weights_sha256"] == "random-init":
        from clearct.encoders.random_init import random_features_note

        issues.add("random_init_features", f"{features}: {random_features_note(first[2]['encoder'])}")
    return Cohort(bags, first[0], first[1], first[2], issues)

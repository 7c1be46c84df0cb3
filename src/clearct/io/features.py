"""The per-scan feature file `<scan_id>.h5` (docs/design.md, "Data contracts"): one writer and one reader for
every stage."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from clearct import __version__
from clearct.common.atomic import atomic_path
from clearct.common.errors import ClearctError

REQUIRED_DATASETS = ("feats", "slice_index", "z_mm", "window")
REQUIRED_ATTRS = ("scan_id", "patient_id", "encoder", "weights_sha256", "embed_dim", "image_size", "windows")


@dataclass
class ScanFeatures:
    """Instance embeddings of one scan: ``feats`` (N, D), rows ordered by (slice_index, window)."""

    feats: np.ndarray
    slice_index: np.ndarray
    z_mm: np.ndarray
    window: np.ndarray
    scan_id: str
    patient_id: str
    encoder: str
    weights_sha256: str
    image_size: int
    windows: list[tuple[str, float, float]]
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # optional datasets, e.g. patch_center_mm
    attrs: dict[str, Any] = field(default_factory=dict)  # optional attributes beyond the contract

    @property
    def embed_dim(self) -> int:
        return int(self.feats.shape[1])

    def __len__(self) -> int:
        return int(self.feats.shape[0])


def write_features(path: str | Path, f: ScanFeatures) -> Path:
    """Write ``f`` atomically to ``path`` (temp file + rename)."""
    n = len(f)
    if f.feats.ndim != 2 or n == 0:
        raise ValueError(f"{f.scan_id}: feats must be (N, D) with N > 0, got {f.feats.shape}")
    for name in ("slice_index", "z_mm", "window"):
        if len(getattr(f, name)) != n:
            raise ValueError(f"{f.scan_id}: {name} has {len(getattr(f, name))} rows for {n} instances")
    path = Path(path)
    buffer = io.BytesIO()  # built in memory: HDF5 crashes the process on a failed disk write, Python raises OSError
    with h5py.File(buffer, "w") as h5:
        feats = f.feats if f.feats.dtype in (np.float16, np.float32) else f.feats.astype(np.float32)
        h5.create_dataset("feats", data=feats)
        h5.create_dataset("slice_index", data=np.asarray(f.slice_index, dtype=np.int32))
        h5.create_dataset("z_mm", data=np.asarray(f.z_mm, dtype=np.float32))
        h5.create_dataset("window", data=np.asarray(f.window, dtype=np.int8))
        for name, data in f.extra.items():
            h5.create_dataset(name, data=data)
        h5.attrs.update(
            {
                "scan_id": f.scan_id,
                "patient_id": f.patient_id,
                "encoder": f.encoder,
                "weights_sha256": f.weights_sha256,
                "embed_dim": f.embed_dim,
                "image_size": int(f.image_size),
                "windows": json.dumps([[str(n), float(lo), float(hi)] for n, lo, hi in f.windows]),
                "clearct_version": __version__,
            }
        )
        for key, value in f.attrs.items():
            h5.attrs[key] = value
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def read_features(path: str | Path, *, load_feats: bool = True) -> ScanFeatures:
    """Read and validate a feature file; a broken one raises ClearctError naming the file."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            missing = [d for d in REQUIRED_DATASETS if d not in h5] + [a for a in REQUIRED_ATTRS if a not in h5.attrs]
            if missing:
                raise ClearctError(f"not a clearct feature file (missing {', '.join(missing)})", path)
            feats = h5["feats"][()] if load_feats else np.empty((h5["feats"].shape[0], 0), np.float32)
            extra = {k: h5[k][()] for k in h5 if k not in REQUIRED_DATASETS}
            known = set(REQUIRED_ATTRS) | {"clearct_version"}
            out = ScanFeatures(
                feats=feats,
                slice_index=h5["slice_index"][()],
                z_mm=h5["z_mm"][()],
                window=h5["window"][()],
                scan_id=str(h5.attrs["scan_id"]),
                patient_id=str(h5.attrs["patient_id"]),
                encoder=str(h5.attrs["encoder"]),
                weights_sha256=str(h5.attrs["weights_sha256"]),
                image_size=int(h5.attrs["image_size"]),
                windows=[tuple(w) for w in json.loads(h5.attrs["windows"])],
                extra=extra,
                attrs={k: h5.attrs[k] for k in h5.attrs if k not in known},
            )
    except (OSError, KeyError, ValueError) as exc:
        raise ClearctError(f"unreadable feature file ({exc})", path) from exc
    if load_feats and not np.isfinite(out.feats).all():
        raise ClearctError("features contain NaN or infinite values", path)
    return out


def recorded_scan(f: ScanFeatures) -> tuple[str, str | None]:
    """The CT a feature file was made from, as ``extract`` recorded it: the source path ('' when not recorded)
    and the series selector that reads the same series again (None: not a DICOM series, or an older file)."""
    series = f.attrs.get("series")
    return str(f.attrs.get("source", "")), (str(series) if series else None)


def read_feature_matrix(path: str | Path, out: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None = None,
                        ) -> np.ndarray:
    """Only the ``feats`` dataset of a feature file (a file :func:`read_features` has already validated), read into
    ``out(shape, dtype)`` when given (an array the caller allocates)."""
    try:
        with h5py.File(path, "r") as h5:
            data = h5["feats"]
            if out is None:
                return data[()]
            array = out(data.shape, data.dtype)
            if array.size:
                data.read_direct(array)
            return array
    except (OSError, KeyError) as exc:
        raise ClearctError(f"unreadable feature file ({exc})", Path(path)) from exc

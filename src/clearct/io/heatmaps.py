"""The in-slice heatmap file ``heatmaps/<scan_id>.h5`` written by ``predict`` and ``attention``: its reader.

| datasets | shape, dtype | meaning |
|---|---|---|
| ``maps`` | (K, T, H, W) float16 | one map per selected instance and target, on the slice's grid (the CTVolume's rows, columns) |
| ``slice_index`` | (K,) int32 | slice of the instance in the CTVolume's Z order |
| ``window`` | (K,) int8 | index into the ``windows`` attribute |
| ``attention`` | (K,) float32 | the instance's MIL attention |

Attributes: ``targets`` (JSON list, T names), ``windows`` (JSON ``[[name, lo, hi], …]``), ``method`` (e.g.
``gradcam``), ``layer``, ``encoder``, ``weights_sha256``, ``scan_id``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from clearct.common.errors import ClearctError

_DATASETS = ("maps", "slice_index", "window", "attention")
_ATTRS = ("targets", "windows", "method", "layer", "encoder", "weights_sha256", "scan_id")


@dataclass
class Heatmaps:
    """The heatmaps of one scan: ``maps`` (K, T, H, W) for K instances and T targets."""

    maps: np.ndarray
    slice_index: np.ndarray
    window: np.ndarray
    attention: np.ndarray
    targets: list[str]
    windows: list[tuple[str, float, float]]
    method: str
    layer: str
    encoder: str
    weights_sha256: str
    scan_id: str

    def __len__(self) -> int:
        return int(self.maps.shape[0])


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_heatmaps(path: str | Path) -> Heatmaps:
    """Read and check one heatmap file; a ClearctError naming the file for anything missing or inconsistent."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            missing = [d for d in _DATASETS if d not in h5] + [a for a in _ATTRS if a not in h5.attrs]
            if missing:
                raise ClearctError(f"not a heatmap file: missing {', '.join(missing)}", path)
            data = {d: h5[d][()] for d in _DATASETS}
            attrs = {a: _text(h5.attrs[a]) for a in _ATTRS}
    except OSError as exc:
        raise ClearctError(f"unreadable heatmap file: {exc}", path) from exc
    try:
        targets = [str(t) for t in json.loads(attrs["targets"])]
        windows = [(str(n), float(lo), float(hi)) for n, lo, hi in json.loads(attrs["windows"])]
    except (ValueError, TypeError) as exc:
        raise ClearctError(f"heatmap attributes targets/windows are not the JSON lists expected: {exc}", path) from exc
    maps = data["maps"]
    k = maps.shape[0] if maps.ndim == 4 else -1
    if maps.ndim != 4 or maps.shape[1] != len(targets):
        raise ClearctError(f"maps must be (K, T={len(targets)}, H, W), got {maps.shape}", path)
    for name in ("slice_index", "window", "attention"):
        if data[name].shape != (k,):
            raise ClearctError(f"{name} has shape {data[name].shape} for {k} maps", path)
    if k and (data["window"].min() < 0 or data["window"].max() >= len(windows)):
        raise ClearctError(f"window indices outside the {len(windows)} windows of the file", path)
    if not np.all(np.isfinite(maps)):
        raise ClearctError("maps hold NaN or infinite values", path)
    return Heatmaps(maps=maps, slice_index=data["slice_index"].astype(np.int64), window=data["window"].astype(np.int64),
                    attention=data["attention"].astype(np.float32), targets=targets, windows=windows,
                    method=attrs["method"], layer=attrs["layer"], encoder=attrs["encoder"],
                    weights_sha256=attrs["weights_sha256"], scan_id=attrs["scan_id"])

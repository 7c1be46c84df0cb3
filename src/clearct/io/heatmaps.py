"""The per-scan heatmap file ``heatmaps/<scan_id>.h5`` (docs/interpret.md, "Heatmaps"): one writer, one reader.

Datasets: ``maps`` float16 (K, T, H, W) — one map per top-attended instance and target on the slice's own grid
(H, W = the CT's rows and columns), ``slice_index`` int32 (K,), ``window`` int8 (K,) (index into ``windows``),
``attention`` float32 (K,). Attributes: ``targets`` and ``windows`` (JSON), ``method``, ``layer``, ``encoder``,
``weights_sha256``, ``scan_id``, and ``scale`` (JSON, one float per target: the maps are stored divided by it, so
that every target's largest value over the K maps is 1 and float16 keeps its precision; ``maps · scale[t]`` is the
method's raw value).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from clearct import __version__
from clearct.common.atomic import atomic_path
from clearct.common.errors import ClearctError

DATASETS = ("maps", "slice_index", "window", "attention")
ATTRS = ("targets", "windows", "method", "layer", "encoder", "weights_sha256", "scan_id")
METHOD_TITLES = {"gradient-input": "gradient × input", "gradcam": "Grad-CAM"}  # ``method`` as figures name it


@dataclass
class ScanHeatmaps:
    """Heatmaps of one scan: ``maps`` (K, T, H, W), normalised per target (see ``scale``)."""

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
    scale: list[float]

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    @property
    def title(self) -> str:
        """The method as figure titles and captions name it."""
        return METHOD_TITLES.get(self.method, self.method)

    def raw(self) -> np.ndarray:
        """The maps in the method's own units, float32 (K, T, H, W)."""
        return self.maps.astype(np.float32) * np.asarray(self.scale, np.float32)[None, :, None, None]


def write_heatmaps(path: str | Path, h: ScanHeatmaps) -> Path:
    """Write ``h`` atomically (built in memory, temporary file + rename)."""
    k = len(h.slice_index)
    if h.maps.ndim != 4 or h.maps.shape[:2] != (k, len(h.targets)):
        raise ValueError(f"{h.scan_id}: maps {h.maps.shape} do not fit {k} instances × {len(h.targets)} targets")
    if len(h.window) != k or len(h.attention) != k or len(h.scale) != len(h.targets):
        raise ValueError(f"{h.scan_id}: window, attention or scale do not match the maps")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.create_dataset("maps", data=np.asarray(h.maps, np.float16), compression="gzip", shuffle=True)
        h5.create_dataset("slice_index", data=np.asarray(h.slice_index, np.int32))
        h5.create_dataset("window", data=np.asarray(h.window, np.int8))
        h5.create_dataset("attention", data=np.asarray(h.attention, np.float32))
        h5.attrs.update({
            "targets": json.dumps([str(t) for t in h.targets]),
            "windows": json.dumps([[str(n), float(lo), float(hi)] for n, lo, hi in h.windows]),
            "method": h.method, "layer": h.layer, "encoder": h.encoder, "weights_sha256": h.weights_sha256,
            "scan_id": h.scan_id, "scale": json.dumps([float(s) for s in h.scale]), "clearct_version": __version__,
        })
    path = Path(path)
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return path


def read_heatmaps(path: str | Path) -> ScanHeatmaps:
    """Read and check one heatmap file; a ClearctError naming the file for anything missing or inconsistent."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            missing = [d for d in DATASETS if d not in h5] + [a for a in ATTRS if a not in h5.attrs]
            if missing:
                raise ClearctError(f"not a clearct heatmap file (missing {', '.join(missing)})", path)
            data = {d: h5[d][()] for d in DATASETS}
            attrs = {a: _text(h5.attrs[a]) for a in ATTRS}
            scale_text = _text(h5.attrs["scale"]) if "scale" in h5.attrs else None
    except OSError as exc:
        raise ClearctError(f"unreadable heatmap file ({exc})", path) from exc
    try:
        targets = [str(t) for t in json.loads(attrs["targets"])]
        windows = [(str(n), float(lo), float(hi)) for n, lo, hi in json.loads(attrs["windows"])]
        scale = [float(s) for s in json.loads(scale_text)] if scale_text else [1.0] * len(targets)
    except (ValueError, TypeError) as exc:
        raise ClearctError(f"heatmap attributes targets/windows/scale are not the JSON lists expected: {exc}",
                           path) from exc
    maps = data["maps"]
    k = maps.shape[0] if maps.ndim == 4 else -1
    if maps.ndim != 4 or maps.shape[1] != len(targets) or len(scale) != len(targets):
        raise ClearctError(f"maps must be (K, T={len(targets)}, H, W) with a scale per target, got {maps.shape}", path)
    for name in ("slice_index", "window", "attention"):
        if data[name].shape != (k,):
            raise ClearctError(f"{name} has shape {data[name].shape} for {k} maps", path)
    if k and (data["window"].min() < 0 or data["window"].max() >= len(windows)):
        raise ClearctError(f"window indices outside the {len(windows)} windows of the file", path)
    if not np.all(np.isfinite(maps)):
        raise ClearctError("maps hold NaN or infinite values", path)
    return ScanHeatmaps(maps=maps, slice_index=data["slice_index"].astype(np.int64),
                        window=data["window"].astype(np.int64), attention=data["attention"].astype(np.float32),
                        targets=targets, windows=windows, method=attrs["method"], layer=attrs["layer"],
                        encoder=attrs["encoder"], weights_sha256=attrs["weights_sha256"], scan_id=attrs["scan_id"],
                        scale=scale)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

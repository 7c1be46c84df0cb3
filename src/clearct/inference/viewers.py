"""From what ``predict``, ``attention`` and the error review hold (a CTVolume, a fold ensemble, its scores and
attention, a heatmap file, lesion boxes) to the arrays and tables that ``report.viewer`` renders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clearct import __version__
from clearct.io.heatmaps import read_heatmaps
from clearct.io.tables import LesionBox, read_lesions_table
from clearct.io.volume import CTVolume
from clearct.mil.data import Bag
from clearct.modeling.store import Ensemble
from clearct.report.viewer import AttentionProfile, Prediction, ViewerScan, write_viewer


def heatmap_path(folder: Path, scan_id: str) -> Path:
    """Where ``predict``/``attention`` put a scan's in-slice heatmaps: ``<folder>/heatmaps/<scan_id>.h5``."""
    return Path(folder) / "heatmaps" / f"{scan_id}.h5"


def lesions_by_scan(path: Path | None) -> dict[str, list[LesionBox]]:
    """lesions.csv grouped by scan_id (empty without a table)."""
    boxes: dict[str, list[LesionBox]] = {}
    if path is not None:
        for box in read_lesions_table(path):
            boxes.setdefault(box.scan_id, []).append(box)
    return boxes


def model_identity(ensemble: Ensemble, folder: Path) -> dict[str, str]:
    """What made the predictions: model folder, fold models, encoder (name, weights sha256 prefix, image size)."""
    enc = ensemble.encoder
    sha = str(enc.get("weights_sha256", ""))
    size = enc.get("image_size")
    return {
        "model folder": str(Path(folder).resolve()),
        "fold models": f"{len(ensemble.models)} ({', '.join(m['job'] for m in ensemble.metas)})",
        "task": ensemble.spec.kind,
        "encoder": f"{enc.get('encoder', '?')} · weights {sha[:12]}" + (f" · {size} px" if size else ""),
        "windows": ", ".join(f"{n} [{lo:g}, {hi:g}]" for n, lo, hi in ensemble.windows),
        "trained with clearct": str(ensemble.metas[0].get("clearct_version", "?")),
        "clearct version": __version__,
    }


def predictions_of(ensemble: Ensemble, scores: np.ndarray) -> list[Prediction]:
    """One scan's scores (n_outputs,) with the ensemble's thresholds and calls (the argmax class for multiclass)."""
    spec = ensemble.spec
    names = spec.output_names
    if spec.kind in ("multilabel", "binary"):
        thr = ensemble.thresholds
        return [Prediction(n, float(scores[j]), float(thr[j]), bool(scores[j] >= thr[j])) for j, n in enumerate(names)]
    if spec.kind == "multiclass":
        best = int(np.argmax(scores))
        return [Prediction(n, float(scores[j]), None, "predicted class" if j == best else "") for j, n in
                enumerate(names)]
    return [Prediction(n, float(scores[j])) for j, n in enumerate(names)]


def write_scan_viewer(target: Path, volume: CTVolume, *, windows: Sequence[Sequence], bag: Bag | None = None,
                      attention: np.ndarray | None = None, heatmaps: Path | None = None,
                      lesions: Sequence[LesionBox] = (), predictions: Sequence[Prediction] = (),
                      identity: dict[str, str] | None = None, notes: Sequence[str] = ()) -> Path:
    """``viewer.html`` of one scan: its slices in ``windows``; the MIL attention of ``bag`` when given; the
    heatmap file when it exists."""
    profile = None
    if bag is not None and attention is not None:
        profile = AttentionProfile(bag.slice_index, bag.window, np.asarray(attention, np.float64),
                                   [str(w[0]) for w in windows])
    maps = read_heatmaps(heatmaps) if heatmaps is not None and Path(heatmaps).is_file() else None
    scan = ViewerScan(scan_id=volume.scan_id, hu=volume.hu, z_mm=volume.z_mm, spacing_mm=volume.spacing_mm,
                      windows=windows, attention=profile, heatmaps=maps, lesions=lesions, predictions=predictions,
                      identity=identity or {}, notes=notes)
    return write_viewer(target, scan)

"""``clearct predict SCAN``: one scan → frozen encoder features (in memory) → fold ensemble →
``prediction.json`` (score per output, thresholded calls, encoder and model provenance), ``attention.csv`` and
``attention.png`` (profile over z per window + the most attended slices), heatmaps of every output over
the most attended slices (``heatmaps/<scan_id>.h5`` and one PNG overlay per slice and window;
:mod:`clearct.inference.heatmaps`; ``--no-heatmaps`` leaves them out, an encoder that cannot give them gets a
warning instead), ``viewer.html`` (the scan in the model's windows with attention, heatmaps, lesion boxes of
``--lesions``), for a DICOM series the results as DICOM objects under ``dicom/`` (inference/dicom_outputs.py), and a
short table on stdout.

``SCAN`` may also be a scans.csv: every scan gets those files in ``OUT/<scan_id>/``, ``OUT/predictions.csv`` holds
one row per scan, and a scan that fails gets one line and a row in ``OUT/failures.csv`` while the rest go on (exit
code 1 at the end).

The HU windows are the ones the model's training features were extracted with (stored with every model), so a
model trained on lung+abdomen features is always fed lung+abdomen features.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from clearct import __version__
from clearct.common.atomic import atomic_write_text
from clearct.common.device import resolve_device
from clearct.common.errors import ClearctError
from clearct.common.failures import Failures
from clearct.common.runs import start_run
from clearct.config import PredictConfig
from clearct.encoders.embed import embed_volume
from clearct.encoders.random_init import random_init_warning
from clearct.encoders.registry import encoder_info
from clearct.evaluate.tables import write_csv
from clearct.inference.attention import attention_rows
from clearct.inference.dicom_outputs import Provenance, write_dicom_outputs
from clearct.inference.ensembles import load_mil_models, model_encoder, training_features
from clearct.inference.heatmaps import heatmap_layer, scan_heatmaps, write_scan_heatmaps
from clearct.inference.viewers import (
    heatmap_path,
    lesions_by_scan,
    model_identity,
    predictions_of,
    write_scan_viewer,
)
from clearct.io import ScanRecord, read_ct, read_scans_table
from clearct.io.read import input_kind
from clearct.io.tables import LesionBox
from clearct.mil.data import Bag
from clearct.mil.store import MilEnsemble
from clearct.preprocess import Window
from clearct.report.attention import attention_figure

LOG = logging.getLogger("clearct")


@dataclass
class Predictor:
    """What every scan of a predict run shares: the ensemble, the encoder and its windows."""

    cfg: PredictConfig
    ensemble: MilEnsemble
    encoder: torch.nn.Module
    windows: list
    device: torch.device
    warnings: list[str]
    lesions: dict[str, list[LesionBox]]
    heatmaps: bool

    def __call__(self, scan_path: Path, out: Path, *, scan_id: str | None = None,
                 patient_id: str | None = None, series: str | None = None) -> dict:
        """Predict one scan into ``out`` (``series``: a scans.csv row's series_uid, else ``--series``); returns
        the content of its prediction.json."""
        cfg, ensemble = self.cfg, self.ensemble
        volume = read_ct(scan_path, series=series or cfg.series, png_values=cfg.png_values)
        volume.scan_id = scan_id or volume.scan_id
        volume.patient_id = patient_id or volume.patient_id
        f = embed_volume(volume, self.encoder, self.windows, batch_size=cfg.batch_size, device=self.device)
        bag = Bag(f.scan_id, f.patient_id, f.feats.astype(np.float32), f.window.astype(np.int64),
                  f.slice_index.astype(np.int32), f.z_mm.astype(np.float32), np.zeros(0, np.float32))
        scores, attn = ensemble.predict([bag])
        spec = ensemble.spec
        names = spec.output_names
        thresholds = ensemble.thresholds
        by_name = {n: float(scores[0, j]) for j, n in enumerate(names)}
        calls: dict[str, bool | str] = {}
        if spec.kind in ("multilabel", "binary"):
            calls = {n: bool(scores[0, j] >= thresholds[j]) for j, n in enumerate(names)}
        elif spec.kind == "multiclass":
            calls = {spec.targets[0]: names[int(np.argmax(scores[0]))]}
        warnings: list[str] = self.warnings + volume.warnings
        result: dict[str, Any] = {
            "scan": str(scan_path), "scan_id": f.scan_id, "slices": int(volume.hu.shape[0]),
            **{k: f.attrs[k] for k in ("series", "series_uid", "series_rule") if k in f.attrs},
            "task": spec.kind, "scores": by_name,
            "thresholds": {n: float(t) for n, t in zip(names, thresholds)} if spec.kind != "multiclass" else {},
            "predictions": calls,
            "encoder": {"name": f.encoder, "weights_sha256": f.weights_sha256, "image_size": f.image_size,
                        "windows": ensemble.windows},
            "model": {"folder": str(cfg.model), "models": [m["job"] for m in ensemble.metas],
                      "calibration": spec.calibration_method,
                      "trained_with": ensemble.metas[0].get("clearct_version"),
                      "training_patients": len(ensemble.training_patients)},
            "warnings": warnings,
            "clearct_version": __version__,
        }
        if self.heatmaps:  # before the viewer and the DICOM objects, which show the maps
            maps = scan_heatmaps(volume.hu, bag, attn[0], ensemble, self.encoder, top_k=cfg.top_k,
                                 batch_size=cfg.batch_size, method=cfg.heatmap_method)
            path = write_scan_heatmaps(out / "heatmaps", maps, volume.hu, by_name)
            result["heatmaps"] = str(path.relative_to(out))
        write_csv(out / "attention.csv", attention_rows(bag, attn[0], ensemble.windows))
        attention_figure(out / "attention.png", title=f"{f.scan_id}: attention of {len(ensemble.models)} fold models",
                         z_mm=bag.z_mm, window=bag.window, slice_index=bag.slice_index, attention=attn[0],
                         windows=ensemble.windows, hu=volume.hu, top_k=cfg.top_k)
        if cfg.viewer:
            write_scan_viewer(out / "viewer.html", volume, windows=ensemble.windows, bag=bag, attention=attn[0],
                              heatmaps=heatmap_path(out, f.scan_id), lesions=self.lesions.get(f.scan_id, []),
                              predictions=predictions_of(ensemble, scores[0]),
                              identity=model_identity(ensemble, cfg.model), notes=warnings)
        if cfg.dicom_outputs and volume.meta.get("format") == "dicom":
            try:
                written = write_dicom_outputs(out / "dicom", volume, series=volume.meta.get("series_selector"),
                                              predictions=predictions_of(ensemble, scores[0]),
                                              slice_index=bag.slice_index, attention=attn[0],
                                              provenance=Provenance.of(ensemble, cfg.model),
                                              heatmaps=heatmap_path(out, f.scan_id), top_k=cfg.top_k)
            except ClearctError as exc:  # the prediction stands; only its DICOM copy cannot be made
                warnings.append(f"no DICOM results: {exc}")
                print(f"clearct predict: warning: no DICOM results: {exc}", file=sys.stderr)
            else:
                result["dicom_outputs"] = {k: str(v) for k, v in written.items()}
        atomic_write_text(out / "prediction.json", json.dumps(result, indent=1))
        return result


def _is_table(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".csv"


def run_predict(cfg: PredictConfig) -> int:
    device = resolve_device(cfg.device)
    ensemble = load_mil_models(cfg.model, "predict", device)
    # the models' own encoder (the one --encoder names, else the one their training features record), at the size
    # their features were embedded at, checked before any scan is read: another encoder's features are meaningless
    encoder = model_encoder(ensemble, encoder=cfg.encoder, weights=cfg.weights,
                            features=training_features(cfg.model), where=cfg.model, random_init=cfg.random_init)
    lesions = lesions_by_scan(cfg.lesions)  # a broken table is refused before any scan is read
    table = read_scans_table(cfg.scan_path) if _is_table(cfg.scan_path) else None
    if table is None:
        input_kind(cfg.scan_path)  # a scan that does not exist is refused before the run folder is made
    out = start_run(cfg.out, "predict", cfg)
    LOG.info("predict: encoder %s (weights %s)", encoder_info(encoder).encoder_name,
             encoder_info(encoder).weights_sha256)
    warnings = [w for w in [random_init_warning(encoder, "predict")] if w]
    heatmaps = cfg.heatmaps
    if heatmaps:
        try:
            heatmap_layer(encoder, cfg.heatmap_method)
        except ClearctError as exc:  # on by default: an encoder without a map still predicts
            heatmaps = False
            warnings.append(f"no heatmaps: {exc}")
            print(f"clearct predict: warning: no heatmaps: {exc}", file=sys.stderr)
    windows = [Window(str(n), float(lo), float(hi)) for n, lo, hi in ensemble.windows]
    predictor = Predictor(cfg, ensemble, encoder, windows, device, warnings, lesions, heatmaps)
    if table is not None:
        return _predict_table(predictor, table, out)
    result = predictor(Path(cfg.scan_path), out)
    print(f"{'output':24s} {'score':>8s}  call")
    for name, score in result["scores"].items():
        print(f"{name:24s} {score:8.3f}  {result['predictions'].get(name, '')}")
    print(f"prediction: {out / 'prediction.json'}, attention: {out / 'attention.png'}"
          + (f", heatmaps: {out / result['heatmaps']}" if "heatmaps" in result else ""))
    return 0


def _predict_table(predictor: Predictor, table: list[ScanRecord], out: Path) -> int:
    """Every scan of a scans.csv; one failing scan is listed, the others are predicted."""
    failures = Failures("predict")
    rows = []
    for record in tqdm(table, desc="predict", unit="scan", disable=None):
        try:
            result = predictor(record.path, out / record.scan_id, scan_id=record.scan_id,
                               patient_id=record.patient_id, series=record.series)
        except Exception as exc:  # this scan failed; the rest go on
            failures.add(record.scan_id, record.path, exc)
            continue
        rows.append({"scan_id": record.scan_id, "patient_id": record.patient_id,
                     **{f"score_{k}": v for k, v in result["scores"].items()},
                     **{f"call_{k}": v for k, v in result["predictions"].items()}})
    if rows:
        write_csv(out / "predictions.csv", rows)
    listed = failures.write(out / "failures.csv")
    print(f"predict: {len(rows)} scans predicted into {out}" + (f"; {failures.summary(listed)}" if failures else ""))
    return 1 if failures else 0

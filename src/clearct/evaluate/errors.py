"""The most confident errors of a classification set: per target the false positives with the highest scores and
the false negatives with the lowest, at each row's own threshold (the F1-optimal one of its models) — the scans to
look at first (``errors.csv``; viewers for them are rendered by ``inference/review.py``)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from clearct.common.atomic import atomic_path
from clearct.evaluate.tables import Predictions

ERROR_COLUMNS = ("set", "target", "error", "rank", "scan_id", "patient_id", "fold", "probability", "threshold",
                 "label", "viewer")


def confident_errors(p: Predictions, set_name: str, per_kind: int = 3) -> list[dict]:
    """``errors.csv`` rows of one set: for each target the ``per_kind`` most confident false positives (label 0,
    score ≥ threshold, highest score first) and false negatives (label 1, score < threshold, lowest first).
    Empty for tasks without thresholded calls (multiclass, regression, survival); unlabelled rows are skipped."""
    if p.kind not in ("multilabel", "binary"):
        return []
    rows = []
    for j, target in enumerate(p.names):
        y, s, t = p.y[:, j], p.scores[:, j], p.thresholds[:, j]
        labelled = np.isfinite(y)
        fp = np.flatnonzero(labelled & (y == 0) & (s >= t))
        fn = np.flatnonzero(labelled & (y == 1) & (s < t))
        for error, idx in (("false_positive", fp[np.argsort(-s[fp], kind="stable")]),
                           ("false_negative", fn[np.argsort(s[fn], kind="stable")])):
            for rank, i in enumerate(idx[:per_kind], 1):
                rows.append({"set": set_name, "target": target, "error": error, "rank": rank,
                             "scan_id": str(p.scans[i]), "patient_id": str(p.patients[i]), "fold": int(p.folds[i]),
                             "probability": float(s[i]), "threshold": float(t[i]), "label": int(y[i]), "viewer": ""})
    return rows


def write_errors(path: Path, rows: list[dict]) -> None:
    """``errors.csv`` atomically, with its header even when no scan was misclassified."""
    with atomic_path(path, suffix=".csv.tmp") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=ERROR_COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def read_errors(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))

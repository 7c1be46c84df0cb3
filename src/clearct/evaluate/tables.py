"""From predictions to ``metrics.csv``: per output and macro, pooled with a 95 % patient-bootstrap CI, and the
mean ± sd over folds. Classification rows: auroc, auprc, f1, accuracy, and the calibration of the probabilities,
ece and brier (:mod:`clearct.evaluate.calibration`)."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clearct.common.atomic import atomic_path
from clearct.evaluate.metrics import (
    bootstrap_weights,
    metric_names,
    percentile_ci,
    point_metrics,
    weighted_metrics,
)


@dataclass
class Predictions:
    """Scores of one evaluated set: rows are scans, columns the task's outputs."""

    kind: str
    names: list[str]  # output names
    patients: np.ndarray  # (n,)
    scans: np.ndarray  # (n,)
    folds: np.ndarray  # (n,) int, 0 = ensemble of every fold (held-out / deployment)
    y: np.ndarray  # (n, O) evaluated labels; survival: (n, 2) time, event
    scores: np.ndarray  # (n, O)
    thresholds: np.ndarray  # (n, O) threshold used per row (classification), else NaN
    uncalibrated: np.ndarray | None = None  # (n, O) the same models' scores before their calibration maps

    @property
    def pred(self) -> np.ndarray | None:
        if self.kind == "multiclass":
            return np.eye(self.scores.shape[1])[self.scores.argmax(1)]
        if self.kind in ("multilabel", "binary"):
            return (self.scores >= self.thresholds).astype(np.float64)
        return None

    def column(self, j: int, rows: np.ndarray | slice = slice(None)) -> tuple:
        y = self.y[rows] if self.kind == "survival" else self.y[rows, j]
        pred = self.pred
        return y, self.scores[rows, j], None if pred is None else pred[rows, j]


def compute_metrics(p: Predictions, set_name: str, *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Rows (set, target, metric, value, ci_low, ci_high, fold_mean, fold_sd, n) incl. a ``macro`` target."""
    names = metric_names(p.kind)
    w = bootstrap_weights(p.patients, n_boot, seed) if n_boot > 0 else None
    point: dict[str, dict[str, float]] = {}
    boot: dict[str, dict[str, np.ndarray]] = {}
    per_fold: dict[str, dict[int, dict[str, float]]] = {}
    folds = sorted(set(p.folds.tolist()) - {0})
    for j, target in enumerate(p.names):
        y, s, pred = p.column(j)
        point[target] = point_metrics(p.kind, y, s, pred)
        if w is not None:
            boot[target] = weighted_metrics(p.kind, y, s, pred, w)
        per_fold[target] = {}
        for k in folds:
            rows = p.folds == k
            per_fold[target][k] = point_metrics(p.kind, *p.column(j, rows))
    if p.kind == "multiclass":  # overall accuracy, not a mean of one-vs-rest accuracies
        pred = p.pred
        assert pred is not None, "multiclass scores have an argmax"
        hit = pred.argmax(1) == p.y.argmax(1)
        # point value, bootstrap values, per-fold values
        macro_acc = (float(hit.mean()), None if w is None else (w * hit).sum(1) / w.sum(1),
                     [float(hit[p.folds == k].mean()) for k in folds])
    rows_out = []
    b: np.ndarray | None
    for target in [*p.names, "macro"] if len(p.names) > 1 else p.names:  # a macro of one target repeats it
        for m in names:
            if target == "macro":
                if p.kind == "multiclass" and m == "accuracy":
                    value, b, fv = macro_acc
                else:
                    value = float(np.nanmean([point[t][m] for t in p.names]))
                    b = None if w is None else np.nanmean([boot[t][m] for t in p.names], axis=0)
                    fv = [float(np.nanmean([per_fold[t][k][m] for t in p.names])) for k in folds]
                if len(p.names) == 1 and p.kind != "multiclass":
                    continue  # macro of one target repeats it
            else:
                value, b = float(point[target][m]), None if w is None else boot[target][m]
                fv = [float(per_fold[target][k][m]) for k in folds]
            lo, hi = percentile_ci(b) if b is not None else (np.nan, np.nan)
            fold = np.asarray(fv, dtype=np.float64)
            rows_out.append({
                "set": set_name, "target": target, "metric": m, "value": value, "ci_low": lo, "ci_high": hi,
                "fold_mean": float(np.nanmean(fold)) if np.isfinite(fold).any() else np.nan,
                "fold_sd": float(np.nanstd(fold, ddof=1)) if np.isfinite(fold).sum() > 1 else np.nan,
                "n": len(p.patients),
            })
    return rows_out


def write_csv(path: Path, rows: Iterable[dict]) -> None:
    """Atomic CSV with the keys of the first row as header; floats with 6 significant digits. ``rows`` may be a
    generator: they are written as they come (attention.csv of a large cohort has millions)."""
    rows = iter(rows)
    first = next(rows, None)
    header = list(first) if first is not None else []
    with atomic_path(path, suffix=".csv.tmp") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        for r in itertools.chain([first] if first is not None else [], rows):
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def prediction_rows(p: Predictions, set_name: str) -> list[dict]:
    """``predictions.csv`` rows: one per scan and output."""
    pred = p.pred
    out = []
    for i in range(len(p.scans)):
        for j, target in enumerate(p.names):
            label = p.y[i, 1] if p.kind == "survival" else p.y[i, j]
            out.append({
                "patient_id": p.patients[i], "scan_id": p.scans[i], "set": set_name, "fold": int(p.folds[i]),
                "target": target, "probability": float(p.scores[i, j]), "label": float(label),
                "threshold": float(p.thresholds[i, j]), "prediction": "" if pred is None else int(pred[i, j]),
                "time": float(p.y[i, 0]) if p.kind == "survival" else "",
            })
    return out

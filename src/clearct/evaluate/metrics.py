"""Metrics: point estimates with scikit-learn, patient-level bootstrap CIs with vectorised weighted versions.

The bootstrap draws patients with replacement; a resample is a weight per row (how often its patient was drawn),
so B resamples are one (B, n) weight matrix and every metric below is computed for all of them at once. With
all weights 1 the weighted versions equal scikit-learn's numbers (tested).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics as skm

from clearct.evaluate.calibration import brier_score, expected_calibration_error, weighted_brier, weighted_ece

CLASSIFICATION = ("auroc", "auprc", "f1", "accuracy", "ece", "brier")
REGRESSION = ("mae", "rmse", "r2", "pearson")
SURVIVAL = ("c_index",)


def metric_names(kind: str) -> tuple[str, ...]:
    if kind in ("multilabel", "binary", "multiclass"):
        return CLASSIFICATION
    return REGRESSION if kind == "regression" else SURVIVAL


def best_f1_threshold(y: np.ndarray, s: np.ndarray) -> float:
    """Threshold on validation scores that maximises F1 (0.5 when the validation part has no positives)."""
    if y.sum() == 0 or y.sum() == len(y):
        return 0.5
    precision, recall, thresholds = skm.precision_recall_curve(y, s)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def concordance_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C: among pairs with t_i < t_j and an event at t_i, the share where risk_i > risk_j (ties ½)."""
    return float(weighted_c_index(time, event, risk, np.ones((1, len(time))))[0])


# --- point estimates (scikit-learn) -----------------------------------------------------------------------------

def point_metrics(kind: str, y: np.ndarray, s: np.ndarray, pred: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of one output column: labels ``y``, scores ``s``, thresholded predictions ``pred`` (classification).

    For survival ``y`` is (n, 2) = (time, event) and ``s`` the risk.
    """
    if kind == "survival":
        return {"c_index": concordance_index(y[:, 0], y[:, 1], s)}
    if kind == "regression":
        r = np.corrcoef(y, s)[0, 1] if np.std(y) > 0 and np.std(s) > 0 else np.nan
        return {"mae": skm.mean_absolute_error(y, s), "rmse": float(np.sqrt(skm.mean_squared_error(y, s))),
                "r2": skm.r2_score(y, s), "pearson": float(r)}
    both = 0 < y.sum() < len(y)
    return {
        "auroc": skm.roc_auc_score(y, s) if both else np.nan,
        "auprc": skm.average_precision_score(y, s) if y.sum() > 0 else np.nan,
        "f1": skm.f1_score(y, pred, zero_division=0.0),
        "accuracy": skm.accuracy_score(y, pred),
        "ece": expected_calibration_error(y, s),
        "brier": brier_score(y, s),
    }


# --- vectorised weighted versions (bootstrap) ---------------------------------------------------------------------

def _tie_groups(s_sorted: np.ndarray) -> np.ndarray:
    """Start index of each run of equal scores in a sorted score vector."""
    return np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])


def weighted_auroc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC for each row of weights ``w`` (B, n): P(score_pos > score_neg) + ½ P(tie), pairs weighted."""
    order = np.argsort(s, kind="stable")
    starts = _tie_groups(s[order])
    pos = np.add.reduceat(w[:, order] * y[order], starts, axis=1)
    neg = np.add.reduceat(w[:, order] * (1 - y[order]), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    n_pos, n_neg = pos.sum(1), neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg), np.nan)


def weighted_average_precision(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average precision Σ (R_k − R_{k−1}) P_k over score thresholds, as scikit-learn defines it, per weight row."""
    order = np.argsort(-s, kind="stable")
    starts = _tie_groups(s[order])
    tp = np.add.reduceat(w[:, order] * y[order], starts, axis=1)
    fp = np.add.reduceat(w[:, order] * (1 - y[order]), starts, axis=1)
    ctp, cfp = np.cumsum(tp, 1), np.cumsum(fp, 1)
    n_pos = ctp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(ctp / (ctp + cfp))
        return np.where(n_pos > 0, (tp * precision).sum(1) / n_pos, np.nan)


def weighted_f1_accuracy(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp = (w * (y * pred)).sum(1)
    fp = (w * ((1 - y) * pred)).sum(1)
    fn = (w * (y * (1 - pred))).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        return f1, (w * (y == pred)).sum(1) / w.sum(1)


def weighted_c_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray, w: np.ndarray) -> np.ndarray:
    comparable = (time[:, None] < time[None, :]) & (event[:, None] > 0.5)
    concordant = (risk[:, None] > risk[None, :]) + 0.5 * (risk[:, None] == risk[None, :])
    num = np.einsum("bi,ij,bj->b", w, comparable * concordant, w)
    den = np.einsum("bi,ij,bj->b", w, comparable.astype(np.float64), w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def weighted_regression(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    tot = w.sum(1)
    err = s - y
    mae = (w * np.abs(err)).sum(1) / tot
    mse = (w * err**2).sum(1) / tot
    my, ms = (w * y).sum(1) / tot, (w * s).sum(1) / tot
    vy = (w * (y - my[:, None]) ** 2).sum(1) / tot
    vs = (w * (s - ms[:, None]) ** 2).sum(1) / tot
    cov = (w * (y - my[:, None]) * (s - ms[:, None])).sum(1) / tot
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"mae": mae, "rmse": np.sqrt(mse), "r2": 1 - mse / vy, "pearson": cov / np.sqrt(vy * vs)}


def weighted_metrics(kind: str, y: np.ndarray, s: np.ndarray, pred: np.ndarray | None,
                     w: np.ndarray) -> dict[str, np.ndarray]:
    """All metrics of one output column for every weight row of ``w`` (B, n) → {name: (B,)}."""
    if kind == "survival":
        return {"c_index": weighted_c_index(y[:, 0], y[:, 1], s, w)}
    if kind == "regression":
        return weighted_regression(y, s, w)
    assert pred is not None, "a classification column has predictions"
    f1, acc = weighted_f1_accuracy(y, pred, w)
    return {"auroc": weighted_auroc(y, s, w), "auprc": weighted_average_precision(y, s, w), "f1": f1,
            "accuracy": acc, "ece": weighted_ece(y, s, w), "brier": weighted_brier(y, s, w)}


def bootstrap_weights(groups: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) weights: each resample draws the distinct ``groups`` (patients) with replacement."""
    _, gidx = np.unique(groups, return_inverse=True)
    n_groups = int(gidx.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    counts = np.zeros((n_boot, n_groups))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts[:, gidx]


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval ignoring resamples where the metric is undefined (e.g. one class only)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def _macro_auroc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mean over the columns of the weighted AUROC per weight row (B,); columns without both classes in a resample
    are left out, as metrics.csv's macro leaves them out; NaN where no column has both."""
    per = np.stack([weighted_auroc(y[:, j], s[:, j], w) for j in range(y.shape[1])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample: NaN, left out of the CI
        return np.nanmean(per, axis=0)


def paired_difference(y: np.ndarray, a: np.ndarray, b: np.ndarray, groups: np.ndarray, *, n_boot: int = 1000,
                      seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(difference, ci_low, ci_high) of the macro AUROC of scores ``a`` minus scores ``b`` on the same rows.

    ``y``, ``a``, ``b``: (n,) or (n, targets) labels and two models' scores of the same scans; ``groups`` (n,) their
    patients. Every bootstrap resample draws patients once and scores both models on the drawn rows (a paired
    bootstrap): what the two share — which patients are easy — cancels from the spread of the difference, so its
    CI is narrower than the two models' own CIs side by side."""
    y, a, b = (np.asarray(v, dtype=np.float64).reshape(len(groups), -1) for v in (y, a, b))
    if not y.shape == a.shape == b.shape:
        raise ValueError(f"labels {y.shape} and scores {a.shape}, {b.shape} differ in shape")
    ones = np.ones((1, len(groups)))
    value = float(_macro_auroc(y, a, ones)[0] - _macro_auroc(y, b, ones)[0])
    w = bootstrap_weights(np.asarray(groups), n_boot, seed)
    lo, hi = percentile_ci(_macro_auroc(y, a, w) - _macro_auroc(y, b, w), level)
    return value, lo, hi

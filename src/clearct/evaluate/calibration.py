"""Calibration of predicted probabilities: the expected calibration error (ECE), the Brier score, their weighted
versions for the patient bootstrap, the reliability curve, and the fits of the two recalibration maps (temperature
scaling, Platt scaling) on validation logits. Pure numpy, scikit-learn and scipy; which logits a model family's
outputs give is :mod:`clearct.modeling.calibrate`'s business.

**Binning.** ``N_BINS`` = 10 equal-width bins on [0, 1], a probability on an edge counted in the lower bin:
scikit-learn's ``calibration_curve(strategy="uniform")``, which draws the reliability diagram, bins exactly so.
Equal-width rather than equal-mass (quantile) bins because the edges then do not depend on the data: the bootstrap
resamples, the sets of one run, the curves before and after calibration and other cohorts are all binned alike,
and a weighted resample's ECE equals the ECE of the sample it stands for (tested). The price: bins far from the
prevalence hold few scans; the diagram shows the count per bin.

ECE = Σ_b (n_b / n) · |mean label_b − mean probability_b|, over the non-empty bins b (Naeini et al. 2015; Guo et
al. 2017 with 10 bins). It is biased upward on small sets: even perfectly calibrated probabilities give an ECE of
the order of the binomial noise per bin.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

N_BINS = 10
TEMPERATURE_BOUNDS = (1e-2, 1e2)  # the search interval of a temperature (both ends are far-fetched fits)


def bin_index(p: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """The equal-width bin of every probability (a value on an edge in the lower bin, as calibration_curve)."""
    return np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p)


def reliability(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per non-empty bin: the fraction of positives, the mean probability (scikit-learn's calibration_curve) and
    the number of scans."""
    frac, mean = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    counts = np.bincount(bin_index(p, n_bins), minlength=n_bins)
    return frac, mean, counts[counts > 0]


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE of probabilities ``p`` against 0/1 labels ``y`` (module docstring)."""
    frac, mean, n = reliability(y, p, n_bins)
    return float(np.sum(n * np.abs(frac - mean)) / n.sum())


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared difference between probability and 0/1 label (scikit-learn)."""
    return float(brier_score_loss(y, p, pos_label=1))


def weighted_ece(y: np.ndarray, p: np.ndarray, w: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """ECE for each row of weights ``w`` (B, n): Σ_b |Σ_{i∈b} w_i (y_i − p_i)| / Σ_i w_i, on the same bins."""
    onehot = np.eye(n_bins)[bin_index(p, n_bins)]  # (n, bins)
    return np.abs((w * (y - p)) @ onehot).sum(1) / w.sum(1)


def weighted_brier(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Brier score for each row of weights ``w`` (B, n)."""
    return (w * (p - y) ** 2).sum(1) / w.sum(1)


# --- recalibration maps ------------------------------------------------------------------------------------------
# Temperature scaling fits one parameter by a bounded scalar search (scipy's minimize_scalar, Brent's method on log
# T): the cross-entropy is convex in 1/T, so a one-dimensional search needs neither gradients nor torch's LBFGS
# closures, and netcal, which has temperature scaling, would add a large dependency tree for these few lines.
# Both maps fit Platt's (1999) smoothed targets instead of 0/1 labels: a validation part that a model separates
# perfectly — common with the few validation patients of a fold — then still gives a finite map instead of T → 0
# (or an infinite Platt slope), which would turn every later probability into 0 or 1.


def platt_targets(y: np.ndarray) -> np.ndarray:
    """Platt's targets: (N₊ + 1) / (N₊ + 2) for a positive, 1 / (N₋ + 2) for a negative."""
    y = np.asarray(y, dtype=np.float64)
    n_pos = y.sum()
    n_neg = len(y) - n_pos
    return np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))


def _search_temperature(nll) -> float:
    found = minimize_scalar(lambda log_t: nll(np.exp(log_t)), bounds=np.log(TEMPERATURE_BOUNDS), method="bounded")
    return float(np.exp(found.x))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T minimising the cross-entropy of sigmoid(logit / T) against Platt's targets of ``y``."""
    z, t = np.asarray(logits, dtype=np.float64), platt_targets(y)
    return _search_temperature(lambda temp: float(np.mean(np.logaddexp(0.0, z / temp) - t * z / temp)))


def fit_softmax_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """One temperature for a softmax over K classes (``logits`` (n, K), ``y`` the class index): the cross-entropy
    of softmax(logits / T) against Platt's targets generalised to K classes — the true class k gets
    (N_k + 1) / (N_k + 2), the other classes share the rest evenly (for K = 2 exactly Platt's targets)."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    n, k = z.shape
    count = np.bincount(y, minlength=k)
    hit = (count[y] + 1) / (count[y] + 2)
    t = np.repeat(((1 - hit) / (k - 1))[:, None], k, axis=1)
    t[np.arange(n), y] = hit
    return _search_temperature(lambda temp: float(np.mean(logsumexp(z / temp, axis=1) - (t * z / temp).sum(1))))


def fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling: (slope a, intercept b) of sigmoid(a · logit + b), a logistic regression of Platt's targets
    on the logit. scikit-learn's classifier takes hard labels only, so every scan enters twice — as a positive
    with weight t and as a negative with weight 1 − t —, which makes its weighted log-loss the cross-entropy
    against t; no penalty (C = ∞), the smoothed targets keep the fit finite."""
    z, t = np.asarray(logits, dtype=np.float64), platt_targets(y)
    x = np.concatenate([z, z])[:, None]
    labels = np.concatenate([np.ones(len(z)), np.zeros(len(z))])
    fit = LogisticRegression(C=np.inf).fit(x, labels, sample_weight=np.concatenate([t, 1 - t]))
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])

"""ROC and precision-recall curves per target with 95 % bootstrap bands (patient resamples), and reliability
diagrams (calibration), PNG + SVG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from clearct.common.atomic import atomic_path  # noqa: E402
from clearct.evaluate.calibration import N_BINS, brier_score, expected_calibration_error, reliability  # noqa: E402
from clearct.evaluate.metrics import bootstrap_weights  # noqa: E402

GRID = np.linspace(0, 1, 101)


def _band(y: np.ndarray, s: np.ndarray, w: np.ndarray, curve: str) -> np.ndarray:
    """Curves of the bootstrap resamples on a common grid: TPR at FPR (roc) or precision at recall (pr)."""
    out = []
    for wb in w:
        if wb[y > 0].sum() == 0 or (curve == "roc" and wb[y == 0].sum() == 0):
            continue
        if curve == "roc":
            fpr, tpr, _ = skm.roc_curve(y, s, sample_weight=wb)
            out.append(np.interp(GRID, fpr, tpr))
        else:
            prec, rec, _ = skm.precision_recall_curve(y, s, sample_weight=wb)
            out.append(np.interp(GRID, rec[::-1], prec[::-1]))
    return np.asarray(out)


def save_figure(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically and close the figure."""
    paths = []
    for ext in ("png", "svg"):
        target = stem.with_suffix(f".{ext}")
        with atomic_path(target, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
        paths.append(target)
    plt.close(fig)
    return paths


def roc_pr_figure(y: np.ndarray, s: np.ndarray, groups: np.ndarray, target: str, out_stem: Path, *,
                  n_boot: int = 200, seed: int = 0) -> list[Path]:
    """One figure with the ROC and the PR curve of ``target`` and their 95 % bootstrap bands."""
    y = np.asarray(y, dtype=np.float64)
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(9, 4.2))
    w = bootstrap_weights(groups, n_boot, seed)
    if 0 < y.sum() < len(y):
        fpr, tpr, _ = skm.roc_curve(y, s)
        ax_roc.plot(fpr, tpr, color="C0", label=f"AUROC {skm.roc_auc_score(y, s):.3f}")
        band = _band(y, s, w, "roc")
        if len(band):
            ax_roc.fill_between(GRID, *np.quantile(band, [0.025, 0.975], axis=0), color="C0", alpha=0.2,
                                label="95% CI")
    if y.sum() > 0:
        prec, rec, _ = skm.precision_recall_curve(y, s)
        ax_pr.plot(rec, prec, color="C1", label=f"AUPRC {skm.average_precision_score(y, s):.3f}")
        band = _band(y, s, w, "pr")
        if len(band):
            ax_pr.fill_between(GRID, *np.quantile(band, [0.025, 0.975], axis=0), color="C1", alpha=0.2,
                               label="95% CI")
        ax_pr.axhline(y.mean(), color="grey", lw=0.8, ls=":", label="prevalence")
    ax_roc.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC — {target}", xlim=(0, 1),
               ylim=(0, 1.01))
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"PR — {target}", xlim=(0, 1), ylim=(0, 1.01))
    for ax in (ax_roc, ax_pr):
        ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, out_stem)


def reliability_figure(y: np.ndarray, curves: dict[str, np.ndarray], title: str, out_stem: Path) -> list[Path]:
    """Reliability diagram: for each named score vector (e.g. before and after calibration) the fraction of
    positives against the mean probability of every non-empty bin (the equal-width bins of the ECE), the diagonal
    of perfect calibration, ECE and Brier score in the legend; below, the number of scans per bin."""
    y = np.asarray(y, dtype=np.float64)
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(4.8, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = np.linspace(0.0, 1.0, N_BINS + 1)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
    for i, (label, s) in enumerate(curves.items()):
        frac, mean, _ = reliability(y, s)
        ax.plot(mean, frac, marker="o", ms=4, color=f"C{i}",
                label=f"{label}: ECE {expected_calibration_error(y, s):.3f}, Brier {brier_score(y, s):.3f}")
        ax_n.hist(s, bins=edges, histtype="step", color=f"C{i}")
    ax.set(ylabel="fraction of positives", title=f"reliability — {title}", xlim=(0, 1), ylim=(-0.01, 1.01))
    ax.legend(loc="upper left", fontsize=8)
    ax_n.set(xlabel=f"predicted probability ({N_BINS} equal-width bins)", ylabel="scans")
    return save_figure(fig, out_stem)

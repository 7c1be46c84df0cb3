"""Report figures: example slices in each HU window with the lesion boxes, the pretraining loss curve, and the
ROC curves of every target in one panel per evaluated set.

Plotting only: callers pass volumes, boxes and tables that the pipeline stages wrote.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from clearct.evaluate.plots import save_figure  # noqa: E402
from clearct.io.tables import LesionBox  # noqa: E402
from clearct.preprocess import Window  # noqa: E402
from clearct.report.attention import window_image  # noqa: E402


def _png(fig: plt.Figure, target: Path) -> Path:
    """Write ``target`` (PNG) and its SVG twin atomically; returns the PNG path."""
    return save_figure(fig, Path(target).with_suffix(""))[0]


def example_slices_figure(target: Path, examples: Sequence[tuple[str, np.ndarray, Sequence[LesionBox]]],
                          windows: Sequence[Window]) -> Path:
    """One column per example (title, one HU slice (Y, X), its boxes), one row per window; boxes in red with
    their location label."""
    rows, cols = max(len(windows), 1), max(len(examples), 1)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    for c, (title, hu, boxes) in enumerate(examples):
        for r, w in enumerate(windows):
            ax = axes[r, c]
            ax.imshow(window_image(hu, w.lo, w.hi), cmap="gray", vmin=0, vmax=1)
            for b in boxes:
                ax.add_patch(Rectangle((b.x1 - 0.5, b.y1 - 0.5), b.x2 - b.x1, b.y2 - b.y1, fill=False, ec="red",
                                       lw=1.2))
                ax.text(b.x1, b.y1 - 2, b.label, color="red", fontsize=7, va="bottom")
            ax.set_title(f"{title}\n{w.name} window ({w.lo:g}..{w.hi:g} HU)", fontsize=8)
            ax.axis("off")
    for ax in axes[:, len(examples):].ravel():
        ax.axis("off")
    fig.tight_layout()
    return _png(fig, target)


def read_loss_log(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(epoch, loss) columns of a ``pretrain-log.csv``."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return (np.array([float(r["epoch"]) for r in rows]), np.array([float(r["loss"]) for r in rows]))


def loss_curve_figure(target: Path, panels: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> Path:
    """One panel per run (title, epoch, loss): the training loss against (fractional) epoch."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, epoch, loss) in zip(axes[0], panels):
        ax.plot(epoch, loss, marker="o" if len(loss) < 30 else None, ms=3, lw=1.3)
        ax.set(xlabel="epoch", ylabel="loss", title=title)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig, target)


def roc_overview_figure(target: Path, panels: Sequence[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]]) -> Path:
    """One ROC panel per set (title, {target: (labels, scores)}); every target with both classes is a curve
    labelled with its AUROC."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels):
        for i, (name, (y, s)) in enumerate(curves.items()):
            if 0 < y.sum() < len(y):
                fpr, tpr, _ = skm.roc_curve(y, s)
                ax.plot(fpr, tpr, lw=1.3, color=f"C{i % 10}", label=f"{name} {skm.roc_auc_score(y, s):.2f}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right", fontsize=7, title="AUROC", title_fontsize=7)
    fig.tight_layout()
    return _png(fig, target)

"""Heatmap overlays: one slice in its HU window with each target's map as a translucent colour layer; and the
pointing game drawn: lesion slices with the map of the lesion's location, its box and the map's peak.

Pure plotting: callers pass the slice (HU), the window and the maps on the slice's grid (and boxes and peaks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from clearct.common.atomic import atomic_path  # noqa: E402
from clearct.report.attention import window_image  # noqa: E402

MAX_ALPHA = 0.6  # the strongest part of a map covers the slice at this opacity; weak parts fade out


def _draw_overlay(ax: plt.Axes, hu_slice: np.ndarray, window: Sequence, heatmap: np.ndarray) -> None:
    """The slice in its window, and the map (values in [0, 1]) in colour, opacity growing with the value."""
    m = np.clip(np.nan_to_num(heatmap.astype(np.float32)), 0.0, 1.0)
    ax.imshow(window_image(hu_slice, float(window[1]), float(window[2])), cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.imshow(m, cmap="jet", vmin=0, vmax=1, alpha=MAX_ALPHA * m, interpolation="bilinear")


def _save(fig: plt.Figure, title: str, target: Path) -> Path:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    target = Path(target)
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return target


def heatmap_overlay(target: Path, *, hu_slice: np.ndarray, window: Sequence, maps: np.ndarray,
                    targets: Sequence[str], scores: Sequence[float] | None, title: str) -> Path:
    """Write a PNG with one panel per target: the slice (Y, X) in ``window`` ([name, lo, hi]) and ``maps[t]``
    (values in [0, 1], shape (Y, X)) in colour with opacity growing with the value; panel titles give the target
    and its score."""
    n = len(targets)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.2 * cols, 4.8), 3.4 * rows + 0.7), squeeze=False)
    for t, ax in enumerate(axes.flat):
        ax.axis("off")
        if t >= n:
            continue
        _draw_overlay(ax, hu_slice, window, maps[t])
        score = f": {scores[t]:.3f}" if scores is not None else ""
        ax.set_title(f"{targets[t]}{score}", fontsize=9)
    return _save(fig, title, target)


@dataclass(frozen=True)
class PointingPanel:
    """One lesion slice of the pointing game: the slice, the map of the lesion's location, the lesion box, the
    box the peak may fall in (grown) and the peak (row, column; None for a map without one)."""

    title: str
    hu_slice: np.ndarray
    window: Sequence  # name, lo, hi
    heatmap: np.ndarray
    box: tuple[float, float, float, float]
    grown: tuple[float, float, float, float]
    peak: tuple[float, float] | None
    hit: bool


def pointing_figure(target: Path, panels: Sequence[PointingPanel], title: str, cols: int = 3) -> Path:
    """Write a PNG with one panel per lesion slice: the map over the slice, the lesion box (red), the grown box
    (dashed) and the map's peak (a cross: green inside the grown box, orange outside)."""
    cols = max(1, min(cols, len(panels)))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.5 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p in zip(axes.flat, panels):
        _draw_overlay(ax, p.hu_slice, p.window, p.heatmap)
        for (x1, y1, x2, y2), style in ((p.box, "-"), (p.grown, "--")):  # box edges on pixel edges (x − 0.5)
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor="red",
                                   linestyle=style, lw=1.2))
        if p.peak is not None:
            ax.plot(p.peak[1], p.peak[0], marker="x", ms=9, mew=2.2, color="lime" if p.hit else "orange")
        ax.set_title(p.title, fontsize=8)
    return _save(fig, title, target)

"""Heatmap overlays: one slice in its HU window with each target's map as a translucent colour layer.

Pure plotting: callers pass the slice (HU), the window and the maps on the slice's grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from clearct.common.atomic import atomic_path  # noqa: E402
from clearct.report.attention import window_image  # noqa: E402

MAX_ALPHA = 0.6  # the strongest part of a map covers the slice at this opacity; weak parts fade out


def heatmap_overlay(target: Path, *, hu_slice: np.ndarray, window: Sequence, maps: np.ndarray,
                    targets: Sequence[str], scores: Sequence[float] | None, title: str) -> Path:
    """Write a PNG with one panel per target: the slice (Y, X) in ``window`` ([name, lo, hi]) and ``maps[t]``
    (values in [0, 1], shape (Y, X)) in colour with opacity growing with the value; panel titles give the target
    and its score."""
    n = len(targets)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.2 * cols, 4.8), 3.4 * rows + 0.7), squeeze=False)
    image = window_image(hu_slice, float(window[1]), float(window[2]))
    for t, ax in enumerate(axes.flat):
        ax.axis("off")
        if t >= n:
            continue
        m = np.clip(np.nan_to_num(maps[t].astype(np.float32)), 0.0, 1.0)
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.imshow(m, cmap="jet", vmin=0, vmax=1, alpha=MAX_ALPHA * m, interpolation="bilinear")
        score = f": {scores[t]:.3f}" if scores is not None else ""
        ax.set_title(f"{targets[t]}{score}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    target = Path(target)
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return target

"""Attention figures (the paper's Fig. 3): attention over slice position per HU window, known lesion slices
marked, and a montage of the most attended slices rendered from the CT in their window.

Pure plotting: callers pass arrays (and optionally the CTVolume); the report engineer reuses these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from clearct.common.atomic import atomic_path  # noqa: E402


def plot_attention_profile(ax: plt.Axes, z_mm: np.ndarray, window: np.ndarray, attention: np.ndarray,
                           window_names: Sequence[str], lesion_z: Sequence[float] = ()) -> None:
    """Attention against z (mm), one line per window; lesion slices as dashed vertical lines."""
    for w, name in enumerate(window_names):
        rows = np.flatnonzero(window == w)
        if len(rows):
            order = rows[np.argsort(z_mm[rows])]
            ax.plot(z_mm[order], attention[order], lw=1.2, label=name)
    for i, z in enumerate(sorted(set(float(v) for v in lesion_z))):
        ax.axvline(z, color="red", ls="--", lw=0.8, alpha=0.7, label="lesion slice" if i == 0 else None)
    ax.set(xlabel="z (mm)", ylabel="attention")
    ax.legend(fontsize=8, loc="upper right")


def top_instances(attention: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the ``k`` most attended instances, highest first."""
    return np.argsort(-attention, kind="stable")[:k]


def window_image(hu_slice: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.clip((hu_slice.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


def attention_figure(target: Path, *, title: str, z_mm: np.ndarray, window: np.ndarray, slice_index: np.ndarray,
                     attention: np.ndarray, windows: Sequence[Sequence], lesion_slices: Sequence[int] = (),
                     hu: np.ndarray | None = None, top_k: int = 6) -> Path:
    """Write one figure (PNG, or SVG when ``target`` ends in .svg): the attention profile and, when the CT
    ``hu`` (Z, Y, X) is given, a montage of the ``top_k`` most attended slices each shown in its own window."""
    names = [str(w[0]) for w in windows]
    z_of = dict(zip(slice_index.tolist(), z_mm.tolist()))
    lesion_z = [z_of[s] for s in lesion_slices if s in z_of]
    top = [] if hu is None else [i for i in top_instances(attention, top_k) if 0 <= slice_index[i] < len(hu)]
    ncols = max(len(top), 1)
    fig = plt.figure(figsize=(max(8, 1.6 * ncols), 6.2 if top else 3.4))
    grid = fig.add_gridspec(2 if top else 1, ncols, height_ratios=[1.1, 1] if top else [1])
    plot_attention_profile(fig.add_subplot(grid[0, :]), z_mm, window, attention, names, lesion_z)
    fig.axes[0].set_title(title)
    for col, i in enumerate(top):
        assert hu is not None  # top is empty without the CT
        ax = fig.add_subplot(grid[1, col])
        lo, hi = float(windows[window[i]][1]), float(windows[window[i]][2])
        ax.imshow(window_image(hu[slice_index[i]], lo, hi), cmap="gray", vmin=0, vmax=1)
        mark = " ●" if slice_index[i] in set(lesion_slices) else ""
        ax.set_title(f"#{slice_index[i]} {names[window[i]]}\na={attention[i]:.3f}{mark}", fontsize=8)
        ax.axis("off")
    target = Path(target)
    fmt = target.suffix.lstrip(".") or "png"
    with atomic_path(target, suffix=f".{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return target

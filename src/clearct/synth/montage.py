"""A montage of phantom slices in the lung and abdomen windows with the lesion boxes drawn (docs/synth-montage.png).

``python -m clearct.synth.montage docs/synth-montage.png`` regenerates the committed figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from clearct.common.atomic import atomic_path
from clearct.config import SynthSettings
from clearct.synth.cohort import render_patient
from clearct.synth.phantom import Phantom

WINDOWS = {"lung": (-1500.0, 500.0), "abdomen": (-175.0, 275.0)}


def pick_slices(ph: Phantom, count: int) -> list[int]:
    """Key slices of the lesions first, then evenly spread levels, in slice order."""
    keys = sorted({les.key_slice for les in ph.findings.lesions})
    z = ph.volume.hu.shape[0]
    chosen = list(dict.fromkeys(keys[:count]))
    for k in np.linspace(0.1 * z, 0.9 * z, count).astype(int):
        if len(chosen) >= count:
            break
        if all(abs(k - c) > z // (2 * count) for c in chosen):
            chosen.append(int(k))
    return sorted(chosen[:count])


def draw_montage(path: str | Path, *, patients: int = 4, seed: int = 1, size: int = 256, slices: int = 64,
                 per_patient: int = 3) -> Path:
    """Render ``patients`` phantoms and save a grid: one row per patient, each slice in both windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    cols = per_patient * len(WINDOWS)
    fig, axes = plt.subplots(patients, cols, figsize=(2.0 * cols, 2.25 * patients), squeeze=False)
    for row in range(patients):
        settings = SynthSettings(size=size, slices=slices, scan_range="cap" if row % 2 == 0 else "chest",
                                 location_prevalence=0.5, lung_prevalence=0.35)
        ph = render_patient(seed, row, settings)
        f = ph.findings
        lung = ", ".join(k for k, v in f.lung.items() if v) or "no lung findings"
        for j, k in enumerate(pick_slices(ph, per_patient)):
            for w, (name, (lo, hi)) in enumerate(WINDOWS.items()):
                ax = axes[row, j * len(WINDOWS) + w]
                ax.imshow(np.clip((ph.volume.hu[k] - lo) / (hi - lo), 0, 1), cmap="gray", vmin=0, vmax=1)
                for les in f.lesions:
                    if les.key_slice == k:
                        x1, y1, x2, y2 = les.box
                        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec="red", lw=1))
                        ax.text(x1, y1 - 3, les.location, color="red", fontsize=6)
                title = f"z={ph.volume.z_mm[k]:.0f} mm, {name} window"
                if j == 0 and w == 0:
                    title = f"{ph.volume.scan_id} ({ph.scan_range}): {lung}; stage_high={f.stage_high}\n{title}"
                ax.set_title(title, fontsize=6, loc="left")
                ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, top=0.95, bottom=0.01, wspace=0.03, hspace=0.25)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    print(draw_montage(args.out, patients=args.patients, seed=args.seed, size=args.size))


if __name__ == "__main__":
    main()

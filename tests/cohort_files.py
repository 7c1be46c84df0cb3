"""Test helper: small cohorts as real files (NIfTI scans, phantom .npz scans, scans.csv) and tiny DrasCLR flags."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np

from clearct.config import SynthConfig
from clearct.synth import generate_cohort
from drasclr_phantom import chest_phantom

# a tiny DrasCLR network: seconds per epoch (the cpu preset fills the other sizes)
DRASCLR = ["--method", "drasclr", "--batch-size", "8", "--device", "cpu", "--drasclr-grid-mm", "24",
           "--drasclr-channels", "4,8", "--drasclr-embed-dim", "16", "--drasclr-proj-dim", "16",
           "--drasclr-queue", "16", "--drasclr-location-bins", "1"]


def pretrain_cohort(out: Path) -> Path:
    """Three annotated synth patients of 8 slices at 64 px: the smallest cohort a pretraining step runs on."""
    generate_cohort(SynthConfig(out=out, patients=3, size=64, slices=8, format="nifti", unannotated=0.0, workers=1),
                    progress=False)
    return out


def scans_table(path: Path, rows: list[tuple[str, str, str | Path]]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([("scan_id", "patient_id", "path"), *rows])
    return path


def nifti(path: Path, z: int = 5, seed: int = 0, size: int = 32) -> Path:
    """Random HU in an LPS-like affine (the reader reorients it)."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(-600, 300, size=(size, size, z)).astype(np.int16)
    nib.save(nib.Nifti1Image(hu, np.diag([-0.8, -0.8, 2.5, 1.0])), path)
    return path


def drasclr_scans(folder: Path, extra: list[tuple[str, str, str]] = ()) -> Path:
    """Two small chest phantoms as .npz scans (and ``extra`` rows) in a scans.csv."""
    rows = []
    for s in range(2):
        vol = chest_phantom(z=16, n=48, seed=s)
        np.savez(folder / f"c{s}.npz", hu=vol.hu, spacing=list(vol.spacing_mm))
        rows.append((f"c{s}", f"p{s}", f"c{s}.npz"))
    return scans_table(folder / "scans.csv", rows + list(extra))

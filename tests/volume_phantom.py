"""Tiny whole-volume cohorts for the finetune3d tests: a body ellipsoid in air with noise; a volume positive for
the planted target carries one large bright sphere somewhere in the body. Patient and scan ids and the labels come
from planted MIL bags, so a feature cohort and a volume cohort of the same patients share one labels.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

SHAPE = (20, 40, 40)
SPACING = (5.0, 8.0, 8.0)


def phantom(rng: np.random.Generator, sphere: bool) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in SHAPE), indexing="ij")
    centre = np.array(SHAPE) / 2 + rng.uniform(-2, 2, 3)
    body = ((z - centre[0]) / 8.5) ** 2 + ((y - centre[1]) / 15) ** 2 + ((x - centre[2]) / 17) ** 2 <= 1
    hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 20, SHAPE)
    if sphere:
        c = centre + rng.uniform(-1, 1, 3) * np.array([3, 6, 7])
        hu[((z - c[0]) * 5) ** 2 + ((y - c[1]) * 8) ** 2 + ((x - c[2]) * 8) ** 2 <= 40.0**2] = 260.0
    return np.round(hu).astype(np.int16)


def write_volume_cohort(folder: Path, ids: list[tuple[str, str]], sphere: list[bool], seed: int = 0) -> Path:
    """``folder/volumes/<scan_id>.npz`` + ``folder/scans.csv``; returns the scans.csv path."""
    rng = np.random.default_rng(seed)
    (folder / "volumes").mkdir(parents=True, exist_ok=True)
    scans = folder / "scans.csv"
    with open(scans, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["scan_id", "patient_id", "path"])
        for (scan_id, patient_id), s in zip(ids, sphere):
            np.savez(folder / "volumes" / f"{scan_id}.npz", hu=phantom(rng, s), spacing=np.array(SPACING))
            w.writerow([scan_id, patient_id, f"volumes/{scan_id}.npz"])
    return scans

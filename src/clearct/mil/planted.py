"""Feature cohorts with a planted signal, for tests, the benchmark and sanity checks of a setup.

Every instance is N(0, I) noise; in a bag positive for target t, a few instances are shifted by ``shift`` along
a fixed unit direction of that target. Nothing else tells the bags apart, so a model can only succeed by
finding (attending to) the planted instances. ``shift=0`` gives pure noise.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clearct.extract.h5 import ScanFeatures, write_features


@dataclass
class PlantedBag:
    features: ScanFeatures
    labels: np.ndarray  # (T,) 0/1
    planted: np.ndarray  # row indices of the planted instances (any target)


def planted_bags(n_bags: int, *, dim: int = 64, instances: tuple[int, int] = (30, 80), targets: int = 1,
                 planted: tuple[int, int] = (3, 6), shift: float = 3.0, windows: int = 1, prevalence: float = 0.5,
                 seed: int = 0, dtype: type = np.float32, prefix: str = "", direction_seed: int = 0) -> list[PlantedBag]:
    """``n_bags`` bags, one per patient (``p0000``…); ``instances`` and ``planted`` are inclusive ranges of
    slices per bag and of planted slices per positive target. With ``windows`` > 1 each slice appears once per
    window (rows ordered by slice, then window) and the signal is planted in every window of the slice.
    ``prefix`` starts every id (a second cohort with new patients). The signal directions come from ``direction_seed``, so cohorts drawn with other ``seed`` values carry the same signal."""
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(direction_seed).normal(size=(targets, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    names = [("lung", -1500.0, 500.0), ("abdomen", -175.0, 275.0), ("bone", -500.0, 1300.0)][:windows]
    names += [(f"w{i}", 0.0, 1.0) for i in range(len(names), windows)]
    out = []
    for i in range(n_bags):
        n_slices = int(rng.integers(instances[0], instances[1] + 1))
        labels = (rng.random(targets) < prevalence).astype(np.int64)
        feats = rng.normal(size=(n_slices, windows, dim)).astype(np.float32)
        hit = []
        for t in np.flatnonzero(labels):
            rows = rng.choice(n_slices, min(n_slices, int(rng.integers(planted[0], planted[1] + 1))), replace=False)
            feats[rows] += shift * directions[t]
            hit.append(rows)
        slices = np.unique(np.concatenate(hit)) if hit else np.zeros(0, np.int64)
        pid = f"{prefix}p{i:04d}"
        f = ScanFeatures(
            feats=feats.reshape(-1, dim).astype(dtype), slice_index=np.repeat(np.arange(n_slices), windows),
            z_mm=np.repeat(np.arange(n_slices) * 2.5, windows).astype(np.float32),
            window=np.tile(np.arange(windows), n_slices), scan_id=f"{prefix}s{i:04d}", patient_id=pid,
            encoder="planted", weights_sha256="random-init", image_size=64, windows=names)
        rows = (slices[:, None] * windows + np.arange(windows)[None, :]).ravel()
        out.append(PlantedBag(f, labels, np.sort(rows)))
    return out


def write_planted_cohort(folder: Path, bags: list[PlantedBag], target_names: list[str] | None = None) -> Path:
    """Write ``folder/features/<scan_id>.h5`` and ``folder/labels.csv`` (patient_id + one 0/1 column per target);
    returns the labels path."""
    folder = Path(folder)
    names = target_names or [f"t{j}" for j in range(len(bags[0].labels))]
    for b in bags:
        write_features(folder / "features" / f"{b.features.scan_id}.h5", b.features)
    labels = folder / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", *names])
        for b in bags:
            w.writerow([b.features.patient_id, *b.labels.tolist()])
    return labels

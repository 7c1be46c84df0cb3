"""Feature cohorts with a planted signal, for tests, the benchmark and sanity checks of a setup.

:func:`planted_bags`: every instance is N(0, I) noise; in a bag positive for target t, a few instances are shifted
by ``shift`` along a fixed unit direction of that target. Nothing else tells the bags apart, so a model can only
succeed by finding (attending to) the planted instances. ``shift=0`` gives pure noise.

:func:`mark_lesion_slices`: the positive control of a real feature cohort — the rows of every annotated lesion's
key slice are shifted along a direction of its label; the rest of each scan (anatomy, acquisition) stays as the
encoder saw it. A MIL setup that works finds these marks; one that does not on the unmarked features is limited by
what the encoder puts into the slice embeddings, not by the MIL stage.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from clearct.common.errors import ClearctError
from clearct.common.runs import LOG
from clearct.io.features import ScanFeatures, read_features, write_features
from clearct.io.tables import read_lesions_table


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
            encoder="planted", weights_sha256="planted", image_size=64, windows=names)  # no encoder, no weights
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


class LesionMarks(BaseModel):
    """Settings of :func:`mark_lesion_slices` (a workflow step's config, like a command's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    features: Path  # folder of <scan_id>.h5
    lesions: Path  # lesions.csv of the same cohort (key slice + label per lesion)
    out: Path  # folder for the marked copies
    targets: tuple[str, ...]  # lesion labels that get a direction; other labels are left unmarked
    shift_sd: float = 1.0  # root-mean-square shift per feature dimension, in that dimension's standard deviations
    seed: int = 0


def mark_lesion_slices(marks: LesionMarks) -> int:
    """Write a copy of every feature file with the key-slice rows (all windows) of each lesion whose label is in
    ``targets`` moved along that label's random unit direction u: dimension d by ``shift_sd``·√D·σ_d·u_d, σ_d the
    cohort's standard deviation of dimension d (a root-mean-square move of ``shift_sd`` σ per dimension).
    ``weights_sha256`` records the marking, so models trained on the copies are never mistaken for models of the
    originals. Returns 0 (the demo's stage contract)."""
    scans = []
    for path in sorted(Path(marks.features).glob("*.h5")):
        try:
            scans.append(read_features(path))
        except ClearctError as exc:  # one line per broken file; the rest are marked
            LOG.warning("%s; not marked", exc)
    if not scans:
        raise ValueError(f"{marks.features}: no feature files to mark")
    dim = scans[0].embed_dim
    directions = np.random.default_rng(marks.seed).normal(size=(len(marks.targets), dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    # in units of each dimension's spread, as the MIL model sees features once standardized: the features are
    # low-rank, so a step measured along the direction alone would be tiny for some labels and huge for others
    rows = sum(len(s) for s in scans)
    mean = sum(s.feats.astype(np.float64).sum(axis=0) for s in scans) / rows
    spread = np.sqrt(sum(((s.feats.astype(np.float64) - mean) ** 2).sum(axis=0) for s in scans) / rows)
    steps = marks.shift_sd * np.sqrt(dim) * spread * directions  # (targets, D), RMS shift_sd spreads per dimension
    key_slices: dict[str, list[tuple[int, int]]] = {}
    for box in read_lesions_table(marks.lesions):
        if box.label in marks.targets:
            key_slices.setdefault(box.scan_id, []).append((box.slice_index, marks.targets.index(box.label)))
    tag = f"+lesion-marks(shift_sd={marks.shift_sd:g},seed={marks.seed})"
    for scan in scans:
        feats = scan.feats.astype(np.float32)
        for slice_index, target in key_slices.get(scan.scan_id, []):
            feats[scan.slice_index == slice_index] += steps[target]
        scan.feats, scan.weights_sha256 = feats.astype(scan.feats.dtype), scan.weights_sha256 + tag
        write_features(Path(marks.out) / f"{scan.scan_id}.h5", scan)
    LOG.info("marked the key slices of %d lesions in %d of %d scans → %s", sum(map(len, key_slices.values())),
             sum(s.scan_id in key_slices for s in scans), len(scans), marks.out)
    return 0

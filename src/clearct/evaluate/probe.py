"""Lesion-slice linear probe: how well do an encoder's frozen slice embeddings tell lesion slices apart?

Per lesion label, a logistic regression on the slice embeddings (every window of a slice concatenated) separates the
slices a lesion of that label covers (its ``slice_first..slice_last`` extent, else its key slice) from the other
slices **at the same height**: negatives are restricted to the z range (5th–95th percentile of z_mm) of that
label's lesion slices, so the probe cannot score by recognising the anatomical level alone (a liver-level slice is
not a liver lesion). Scans with rows in lesions.csv only (the others may hold unannotated lesions); patient-level
2-fold cross-fitting; AUROC per label and their mean.

An instance-level AUROC is not a scan-level one: a scan is positive when one or two of its slices are, so ABMIL
needs lesion slices to stand out from every other slice at their height — in practice a probe well above 0.9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clearct.common.errors import ClearctError
from clearct.io.features import read_features
from clearct.io.tables import read_lesions_table


def _slice_matrix(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(slice indices, (S, W·D) embeddings with the windows side by side, z_mm per slice, patient id)."""
    f = read_features(path)
    slices = np.unique(f.slice_index)
    n_w = len(f.windows)
    order = np.lexsort((f.window, f.slice_index))
    feats = f.feats[order].astype(np.float32).reshape(len(slices), n_w * f.embed_dim)
    z_mm = f.z_mm[order].reshape(len(slices), n_w)[:, 0]
    return slices, feats, z_mm, f.patient_id


def lesion_slice_probe(features: str | Path, lesions: str | Path, *, seed: int = 0, c: float = 0.1,
                       any_lesion: bool = False) -> dict:
    """{"mean": mean AUROC, "per_label": {label: AUROC}, "slices": n, "scans": n} of the z-matched probe;
    ``any_lesion`` pools the labels into one (any lesion vs none: more positives on a small cohort)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    boxes: dict[str, list] = {}
    for box in read_lesions_table(lesions):
        boxes.setdefault(box.scan_id, []).append(box)
    labels = ["any"] if any_lesion else sorted({b.label for bs in boxes.values() for b in bs})
    xs, ys, zs, ps = [], [], [], []
    for scan_id, scan_boxes in sorted(boxes.items()):
        path = Path(features) / f"{scan_id}.h5"
        if not path.is_file():
            continue
        slices, feats, z_mm, patient = _slice_matrix(path)
        y = np.zeros((len(slices), len(labels)), np.float32)
        for b in scan_boxes:
            first, last = b.extent
            y[(slices >= first) & (slices <= last), 0 if any_lesion else labels.index(b.label)] = 1.0
        xs.append(feats)
        ys.append(y)
        zs.append(z_mm)
        ps += [patient] * len(slices)
    if not xs:
        raise ClearctError("no feature file of an annotated scan", features)
    X, Y, Z, P = np.concatenate(xs), np.concatenate(ys), np.concatenate(zs), np.asarray(ps)
    patients = np.unique(P)
    np.random.default_rng(seed).shuffle(patients)
    half = np.isin(P, patients[: len(patients) // 2])
    per_label = {}
    for j, label in enumerate(labels):
        positive_z = Z[Y[:, j] > 0]
        if len(positive_z) < 4:
            continue
        lo, hi = np.percentile(positive_z, [5, 95])
        level = (lo <= Z) & (hi >= Z)
        scores = []
        for train in (half, ~half):
            tr, te = level & train, level & ~train
            if len(np.unique(Y[tr, j])) < 2 or len(np.unique(Y[te, j])) < 2:
                continue
            scaler = StandardScaler().fit(X[tr])
            model = LogisticRegression(C=c, max_iter=500).fit(scaler.transform(X[tr]), Y[tr, j])
            scores.append(roc_auc_score(Y[te, j], model.decision_function(scaler.transform(X[te]))))
        if scores:
            per_label[label] = float(np.mean(scores))
    mean = float(np.mean(list(per_label.values()))) if per_label else float("nan")
    return {"mean": mean, "per_label": per_label, "slices": int(len(X)), "scans": len(boxes)}

"""Reading the benchmark's task folders back into numbers: the paper-table cells, the paired differences between
encoders and the pretraining-steps axis (:mod:`clearct.workflows.benchmark` plans the folders; the report renders
what this returns)."""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clearct.common.errors import ClearctError
from clearct.evaluate.metrics import bootstrap_weights, paired_difference, weighted_auroc
from clearct.report.benchmark import BEST_LECL, PAIRS, RESULT_SETS, lecl_lambda


def read_metric_rows(path: Path) -> list[dict]:
    """``metrics.csv`` rows with float values (NaN for empty cells); [] when the file does not exist."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for k in ("value", "ci_low", "ci_high", "fold_mean", "fold_sd"):
            r[k] = float(r[k]) if r.get(k) not in (None, "") else math.nan
    return rows


def auroc_table(path: Path, set_name: str) -> dict[str, dict[str, float]]:
    """{target: {value, ci_low, ci_high, fold_mean, fold_sd}} of the AUROC rows of one set of a metrics.csv."""
    return {r["target"]: {k: r[k] for k in ("value", "ci_low", "ci_high", "fold_mean", "fold_sd")}
            for r in read_metric_rows(path) if r["set"] == set_name and r["metric"] == "auroc"}


@dataclass(frozen=True)
class SetScores:
    """One set of a ``predictions.csv`` as arrays: rows = scans (sorted by id), columns = targets."""

    scans: list[str]
    patients: np.ndarray  # (n,) str
    targets: list[str]
    y: np.ndarray  # (n, T) labels, NaN where a scan has no row for a target
    s: np.ndarray  # (n, T) probabilities

    def select(self, scans: list[str], targets: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(patients, y, s) of ``scans`` × ``targets`` in that order."""
        rows = [self.scans.index(x) for x in scans] if scans != self.scans else list(range(len(scans)))
        cols = [self.targets.index(t) for t in targets]
        return self.patients[rows], self.y[np.ix_(rows, cols)], self.s[np.ix_(rows, cols)]


def read_scores(predictions: Path, set_name: str) -> SetScores | None:
    """The rows of ``set_name`` in a ``predictions.csv``; None when the file or the set is absent."""
    if not predictions.is_file():
        return None
    with open(predictions, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["set"] == set_name]
    if not rows:
        return None
    scans = sorted({r["scan_id"] for r in rows})
    targets = list(dict.fromkeys(r["target"] for r in rows))
    index, col = {s: i for i, s in enumerate(scans)}, {t: j for j, t in enumerate(targets)}
    y, s = np.full((len(scans), len(targets)), np.nan), np.full((len(scans), len(targets)), np.nan)
    patients = np.empty(len(scans), dtype=object)
    for r in rows:
        i, j = index[r["scan_id"]], col[r["target"]]
        y[i, j], s[i, j], patients[i] = float(r["label"]), float(r["probability"]), r["patient_id"]
    return SetScores(scans, patients.astype(str), targets, y, s)


def bootstrap_sd(predictions: Path, set_name: str, *, n_boot: int, seed: int) -> dict[str, float]:
    """Patient-bootstrap sd of the AUROC per target (and of the macro mean) from a ``predictions.csv``.

    A held-out or external set is predicted by the fold ensemble once, so it has no fold spread; its ± is the
    bootstrap sd instead."""
    scores = read_scores(predictions, set_name)
    if scores is None:
        return {}
    w = bootstrap_weights(scores.patients, n_boot, seed)
    per = {t: weighted_auroc(scores.y[:, j], scores.s[:, j], w) for j, t in enumerate(scores.targets)}
    with warnings.catch_warnings():  # a class with one label value in the set has no AUROC: NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {t: float(np.nanstd(v)) for t, v in per.items()}
        if len(scores.targets) > 1:
            out["macro"] = float(np.nanstd(np.nanmean(np.stack(list(per.values())), axis=0)))
    return out


def collect(root: Path, encoders: list[str], *, n_boot: int, seed: int) -> dict[str, dict[str, dict]]:
    """{result set key: {encoder: {target|"macro": {"mean", "sd", "value", "ci_low", "ci_high"}}}}."""
    out: dict[str, dict[str, dict]] = {}
    for rs in RESULT_SETS:
        per_encoder = {}
        for enc in encoders:
            folder = root / "tasks" / enc / rs.task
            table = auroc_table(folder / "metrics.csv", rs.set_name)
            if not table:
                continue
            sds = {} if rs.folds else bootstrap_sd(folder / "predictions.csv", rs.set_name, n_boot=n_boot, seed=seed)
            cells = {}
            for target, m in table.items():
                mean, sd = (m["fold_mean"], m["fold_sd"]) if rs.folds else (m["value"], sds.get(target, math.nan))
                cells[target] = {"mean": mean, "sd": sd, "value": m["value"], "ci_low": m["ci_low"],
                                 "ci_high": m["ci_high"]}
            if len(rs.targets) == 1:  # one target: its row is also the average
                cells["macro"] = cells[rs.targets[0]]
            per_encoder[enc] = cells
        if per_encoder:
            out[rs.key] = per_encoder
    return out


# --- paired differences -------------------------------------------------------------------------------------

def paired_auroc(a: Path, b: Path, set_name: str, *, n_boot: int, seed: int) -> dict | None:
    """Macro AUROC of the predictions in folder ``a`` minus those in folder ``b`` (their ``predictions.csv``) on
    the scans and targets both predicted in ``set_name``, with the paired patient-bootstrap 95 % CI
    (:func:`clearct.evaluate.metrics.paired_difference`); None when either is missing."""
    sa, sb = read_scores(a / "predictions.csv", set_name), read_scores(b / "predictions.csv", set_name)
    if sa is None or sb is None:
        return None
    scans = sorted(set(sa.scans) & set(sb.scans))
    targets = [t for t in sa.targets if t in sb.targets]
    if not scans or not targets:
        return None
    patients, y, s_a = sa.select(scans, targets)
    _, y_b, s_b = sb.select(scans, targets)
    if not np.array_equal(y, y_b, equal_nan=True):
        raise ClearctError(f"labels the same scans differently from {b / 'predictions.csv'}", a / "predictions.csv")
    value, lo, hi = paired_difference(y, s_a, s_b, patients, n_boot=n_boot, seed=seed)
    return {"value": value, "ci_low": lo, "ci_high": hi, "patients": len(set(patients.tolist()))}


def best_lecl(cells: dict[str, dict]) -> str | None:
    """The LECL-λ encoder with the highest pooled macro AUROC in one result set (chosen on the same data: an
    optimistic pick)."""
    lecl = [e for e in cells if lecl_lambda(e) is not None and math.isfinite(cells[e]["macro"]["value"])]
    return max(lecl, key=lambda e: cells[e]["macro"]["value"]) if lecl else None


def collect_paired(root: Path, results: dict[str, dict[str, dict]], *, n_boot: int,
                   seed: int) -> dict[str, list[dict]]:
    """{result set key: [{"a", "b", "value", "ci_low", "ci_high", "patients"}, …]} for each pair of
    :data:`clearct.report.benchmark.PAIRS` whose two encoders have that result set (``a`` is the resolved
    encoder name, so the best LECL's λ is known)."""
    out: dict[str, list[dict]] = {}
    for rs in RESULT_SETS:
        cells = results.get(rs.key, {})
        rows = []
        for a, b in PAIRS:
            name = best_lecl(cells) if a == BEST_LECL else a
            if name is None or name not in cells or b not in cells:
                continue
            diff = paired_auroc(root / "tasks" / name / rs.task, root / "tasks" / b / rs.task, rs.set_name,
                                n_boot=n_boot, seed=seed)
            if diff is not None:
                rows.append({"pair": f"{a} − {b}", "a": name, "b": b, **diff})
        if rows:
            out[rs.key] = rows
    return out


# --- the pretraining-steps axis ------------------------------------------------------------------------------

STEP_SETS = ("cv", "holdout")  # the lesion-location task's cross-validation and held-out test set


def collect_steps(points: dict[str, list[tuple[int, Path]]], reference: Path | None, *, n_boot: int,
                  seed: int) -> list[dict]:
    """Rows {"encoder", "steps", "set", "value", "ci_low", "ci_high", "vs_random"} of the lesion-location task at
    each point (pretraining steps, task folder) of each encoder; ``vs_random`` is the paired difference to the
    random-init task folder ``reference`` (None at step 0, which is that folder, or without it)."""
    rows = []
    for enc, at in points.items():
        for steps, folder in at:
            for set_name in STEP_SETS:
                macro = auroc_table(folder / "metrics.csv", set_name).get("macro")
                if macro is None:
                    continue
                vs = None if reference is None or folder == reference else paired_auroc(
                    folder, reference, set_name, n_boot=n_boot, seed=seed)
                rows.append({"encoder": enc, "steps": steps, "set": set_name, "value": macro["value"],
                             "ci_low": macro["ci_low"], "ci_high": macro["ci_high"], "vs_random": vs})
    return rows

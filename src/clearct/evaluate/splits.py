"""Patient-level splits: iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011), a held-out test set,
k folds, an inner validation split for early stopping, nested folds, and ``splits.json`` to reuse them.

A *job* is one model to train: ``train`` patients, ``val`` patients (early stopping, F1 threshold) and the
``test`` patients it predicts (its outer fold). Plain CV has one job per fold; nested CV has folds × inner folds
jobs, and the inner models of an outer fold are averaged on its test fold.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError


def iterative_stratification(labels: np.ndarray, ratios: list[float], rng: np.random.Generator) -> np.ndarray:
    """Assign each row of a binary label matrix (n, L) to one of ``len(ratios)`` subsets.

    Sechidis et al. 2011, Algorithm 1: repeatedly take the label with the fewest remaining examples and give each
    of its examples to the subset that most lacks that label (ties: the subset that most lacks examples, then
    random). Rows without any label go to the subsets that most lack examples. Returns (n,) subset indices.
    """
    labels = np.asarray(labels, dtype=bool)
    n, n_labels = labels.shape
    shares = np.asarray(ratios, dtype=np.float64) / np.sum(ratios)
    want = shares * n  # examples still wanted per subset
    want_label = shares[:, None] * labels.sum(0)[None, :]  # (subsets, labels)
    subset = np.full(n, -1, dtype=np.int64)
    remaining = labels.copy()

    def assign(i: int, candidates: np.ndarray) -> None:
        best = candidates[want[candidates] == want[candidates].max()]
        j = int(rng.choice(best))
        subset[i] = j
        want[j] -= 1
        want_label[j] -= labels[i]
        remaining[i] = False

    while remaining.any():
        counts = remaining.sum(0)
        label = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        for i in rng.permutation(np.flatnonzero(remaining[:, label])):
            lacking = want_label[:, label]
            assign(i, np.flatnonzero(lacking == lacking.max()))
    for i in rng.permutation(np.flatnonzero(subset < 0)):
        assign(i, np.arange(len(ratios)))
    return subset


def stratification_matrix(kind: str, y: np.ndarray) -> np.ndarray:
    """Binary matrix to stratify on, per task: labels, class one-hot, regression quartile, survival event."""
    if kind == "multilabel":
        return y > 0.5
    if kind in ("binary", "multiclass"):
        classes = y[:, 0].astype(int)
        return np.eye(classes.max() + 1, dtype=bool)[classes]
    if kind == "survival":
        return y[:, 1:2] > 0.5
    edges = np.quantile(y[:, 0], [0.25, 0.5, 0.75])
    return np.eye(4, dtype=bool)[np.searchsorted(edges, y[:, 0])]


@dataclass
class Job:
    name: str
    outer: int
    train: list[str]
    val: list[str]
    test: list[str]


@dataclass
class Splits:
    seed: int
    folds: int
    nested: bool
    holdout: list[str]
    jobs: list[Job]
    unused: list[str] = field(default_factory=list)  # patients left out on purpose (a data-efficiency share)

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Splits:
        try:
            d = json.loads(Path(path).read_text())
            return cls(d["seed"], d["folds"], d["nested"], d["holdout"], [Job(**j) for j in d["jobs"]],
                       d.get("unused", []))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ClearctError(f"not a clearct splits.json ({exc})", path) from exc

    def restrict(self, patients: set[str]) -> tuple[Splits, list[str]]:
        """Drop patients that are not in the cohort; also return cohort patients the splits do not know."""
        keep = lambda ids: [p for p in ids if p in patients]  # noqa: E731
        jobs = [Job(j.name, j.outer, keep(j.train), keep(j.val), keep(j.test)) for j in self.jobs]
        known = set(self.holdout).union(*(set(j.train) | set(j.val) | set(j.test) for j in self.jobs))
        unknown = sorted(patients - known - set(self.unused))
        return Splits(self.seed, self.folds, self.nested, keep(self.holdout), jobs, keep(self.unused)), unknown


def _subsets(ids: list[str], strat: np.ndarray, ratios: list[float], rng: np.random.Generator) -> list[list[str]]:
    which = iterative_stratification(strat, ratios, rng)
    return [[ids[i] for i in np.flatnonzero(which == k)] for k in range(len(ratios))]


def make_splits(patients: list[str], strat: np.ndarray, *, folds: int, seed: int, nested: bool = False,
                test_frac: float = 0.0, val_frac: float = 0.2, holdout: list[str] | None = None) -> Splits:
    """Patient-level stratified splits. ``strat`` (n_patients, L) is the binary matrix to stratify on.

    ``holdout`` fixes the held-out test patients (a split column); else ``test_frac`` > 0 draws them stratified.
    """
    rng = np.random.default_rng(seed)
    index = {p: i for i, p in enumerate(patients)}
    if holdout is None:
        holdout = _subsets(patients, strat, [test_frac, 1 - test_frac], rng)[0] if test_frac > 0 else []
    held = set(holdout)
    pool = [p for p in patients if p not in held]
    if len(pool) < folds:
        raise ClearctError(f"{len(pool)} patients are too few for {folds} folds")
    sub = lambda ids: strat[[index[p] for p in ids]]  # noqa: E731
    outer = _subsets(pool, sub(pool), [1.0] * folds, rng)
    jobs = []
    for k, test in enumerate(outer, start=1):
        train = [p for p in pool if p not in set(test)]
        if nested:
            for j, val in enumerate(_subsets(train, sub(train), [1.0] * folds, rng), start=1):
                rest = [p for p in train if p not in set(val)]
                jobs.append(Job(f"fold-{k}-inner-{j}", k, rest, val, test))
        else:
            val, rest = _subsets(train, sub(train), [val_frac, 1 - val_frac], rng)
            jobs.append(Job(f"fold-{k}", k, rest, val, test))
    return Splits(seed, folds, nested, sorted(held), jobs)

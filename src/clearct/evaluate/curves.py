"""Data-efficiency curves, the pure part: the nested shares of the labelled training patients with one fixed
held-out test set, and the curve figures. The runs themselves are :func:`clearct.workflows.curves.run_curve`.

The held-out patients are drawn once (stratified, ``test_frac``, or marked by ``--split-column``) and are the test
set of every share. The training pool shrinks by nested stratified draws: the patients of share 0.1 are among
those of 0.25, which are among those of 0.5 …, so a curve point differs from the next only by added patients.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clearct.common.errors import ClearctError
from clearct.evaluate.splits import Splits, iterative_stratification, make_splits

SHARES = (0.1, 0.25, 0.5, 1.0)


def nested_shares(pool: list[str], strat: np.ndarray, shares: Sequence[float], seed: int) -> dict[float, list[str]]:
    """Patients of each share of ``pool``: every smaller share is a stratified subset of the next larger one."""
    if not shares or min(shares) <= 0 or max(shares) > 1:
        raise ClearctError(f"shares must lie in (0, 1], got {list(shares)}")
    rng = np.random.default_rng(seed)
    current, rows = list(pool), np.arange(len(pool))
    prev, out = 1.0, {}
    for share in sorted(set(shares), reverse=True):
        if share < prev:
            keep = iterative_stratification(strat[rows], [share / prev, 1 - share / prev], rng) == 0
            current, rows = [p for p, k in zip(current, keep) if k], rows[keep]
        out[share], prev = sorted(current), share
    return out


def curve_splits(patients: list[str], strat: np.ndarray, shares: Sequence[float] = SHARES, *, folds: int = 5,
                 seed: int = 0, test_frac: float = 0.2, holdout: list[str] | None = None, val_frac: float = 0.2,
                 nested: bool = False) -> dict[float, Splits]:
    """One Splits per share: the same held-out patients, folds over the share's (nested) training patients.

    ``folds`` is lowered for small shares so each fold keeps at least two patients.
    """
    index = {p: i for i, p in enumerate(patients)}
    if holdout is None:
        which = iterative_stratification(strat, [test_frac, 1 - test_frac], np.random.default_rng(seed))
        holdout = [p for p, w in zip(patients, which) if w == 0]
    held = set(holdout)
    pool = [p for p in patients if p not in held]
    subsets = nested_shares(pool, strat[[index[p] for p in pool]], shares, seed + 1)
    out = {}
    for share, subset in subsets.items():
        if len(subset) < 4:
            raise ClearctError(f"share {share:g} of {len(pool)} training patients leaves {len(subset)}; "
                               "at least 4 are needed")
        ids = sorted(subset) + sorted(held)
        splits = make_splits(ids, strat[[index[p] for p in ids]], folds=min(folds, len(subset) // 2), seed=seed,
                             nested=nested, val_frac=val_frac, holdout=sorted(held))
        splits.unused = sorted(set(pool) - set(subset))
        out[share] = splits
    return out


def headline(rows: list[dict], metric: str = "auroc") -> list[dict]:
    """The rows of one curve that a plot or a summary shows: ``metric`` for the macro mean, or for the single target
    of a one-target task."""
    mine = [r for r in rows if r["metric"] == metric]
    target = "macro" if any(r["target"] == "macro" for r in mine) else (mine[0]["target"] if mine else "")
    return [r for r in mine if r["target"] == target]


def draw_curves(ax, rows: list[dict], metric: str = "auroc", x: str = "train_patients") -> None:
    """One line per ``command`` (with its 95 % bootstrap CI as a band) of held-out ``metric`` against ``x``
    (``train_patients`` or ``share``) on ``ax``."""
    for command in sorted({r["command"] for r in rows}):
        mine = headline([r for r in rows if r["command"] == command], metric)
        pts = sorted((r[x], r["value"], r["ci_low"], r["ci_high"]) for r in mine)
        if not pts:
            continue
        n, v, lo, hi = (np.array(c, dtype=float) for c in zip(*pts))
        ax.plot(n, v, marker="o", label=f"{command} ({mine[0]['target']})")
        ax.fill_between(n, lo, hi, alpha=0.2)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    label = "training patients (nested shares)" if x == "train_patients" else "share of labelled training patients"
    ax.set(xlabel=label, ylabel=f"held-out {metric}", ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)


def curve_figure(rows: list[dict], stem: Path, metric: str = "auroc") -> list[Path]:
    """Held-out ``metric`` (macro, or the single target) against the number of training patients, with the 95 %
    bootstrap CI as a band — one line per command."""
    from clearct.evaluate.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.5, 4))
    draw_curves(ax, rows, metric)
    ax.set_title("data efficiency")
    return save_figure(fig, stem)

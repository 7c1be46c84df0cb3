"""Data-efficiency curves: train on a share of the labelled training patients, evaluate on fixed held-out test
patients — for any model family (``crossval``'s ABMIL on features, ``finetune3d`` on volumes).

The held-out patients are drawn once (stratified, ``test_frac``, or marked by ``--split-column``) and are the test
set of every share. The training pool shrinks by nested stratified draws: the patients of share 0.1 are among
those of 0.25, which are among those of 0.5 …, so a curve point differs from the next only by added patients.
Each share is cross-validated as usual (folds, inner validation for early stopping) on its patients; its fold
ensemble predicts the held-out set, and that is the curve's value. A share's run is an ordinary command run in
``OUT/share-<s>/`` (its splits.json lists the pool patients it leaves out as ``unused``), so it resumes and
writes compute.json like any other.
"""

from __future__ import annotations

import csv
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clearct.common.compute import load_compute
from clearct.common.errors import ClearctError
from clearct.evaluate.crossfit import group_by_patient, holdout_from_column, patient_strata, read_task
from clearct.evaluate.splits import Splits, iterative_stratification, make_splits
from clearct.evaluate.tables import write_csv
from clearct.mil.data import Issues

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


def _labelled_items(command: str, cfg: Any, labels, spec, issues: Issues) -> list:
    """The command's labelled scans, as its run will see them (grids and features are not needed here)."""
    if command == "crossval":
        from clearct.mil.data import load_cohort

        return load_cohort(cfg.features, labels, spec, labels_path=cfg.labels, issues=issues,
                           windows=cfg.windows).bags
    if command == "finetune3d":
        from clearct.finetune3d.run import labelled_volume_items

        return labelled_volume_items(cfg.scans, labels, spec, issues=issues, labels_path=cfg.labels)[0]
    raise ClearctError(f"no data-efficiency curve for command {command!r} (crossval, finetune3d)")


def run_curve(command: str, cfg: Any, out: Path, shares: Sequence[float] = SHARES, *,
              test_frac: float = 0.2) -> list[dict]:
    """Run ``command`` (``crossval`` or ``finetune3d``, with config ``cfg``) once per share into
    ``out/share-<s>/`` and collect the held-out metrics into ``out/curve.csv`` (+ ``curve.png``).

    ``cfg.split_column`` fixes the held-out patients where given; else ``test_frac`` (or ``cfg.test_frac`` when it
    is set) draws them. finetune3d shares one volume cache (``cfg.cache_dir`` or ``out/volume-cache``).
    """
    from clearct.config import COMMANDS

    out = Path(out)
    labels, spec = read_task(cfg.labels, cfg.targets, cfg.task)
    items = _labelled_items(command, cfg, labels, spec, Issues())
    by_patient = group_by_patient(items)
    patients, strat = patient_strata(spec, by_patient)
    holdout = holdout_from_column(labels, cfg.split_column, items, cfg.labels) if cfg.split_column else None
    per_share = curve_splits(patients, strat, shares, folds=cfg.folds, seed=cfg.seed,
                             test_frac=cfg.test_frac or test_frac, holdout=holdout, val_frac=cfg.val_frac,
                             nested=cfg.nested)
    module, function = COMMANDS[command][1].split(":")
    run = getattr(importlib.import_module(module), function)
    extra = {"cache_dir": cfg.cache_dir or out / "volume-cache"} if command == "finetune3d" else {}
    rows = []
    for share, splits in sorted(per_share.items()):
        folder = out / f"share-{share:g}"
        splits.save(folder / "curve-splits.json")
        run(cfg.model_copy(update={"out": folder, "splits": folder / "curve-splits.json", **extra}))
        used = load_compute(folder) or {"total": {}}
        n_train = len({p for j in splits.jobs for p in j.train + j.val})
        with open(folder / "metrics.csv", newline="") as fh:
            for r in csv.DictReader(fh):
                if r["set"] == "holdout":
                    rows.append({"command": command, "share": share, "train_patients": n_train,
                                 "test_patients": len(splits.holdout), "target": r["target"], "metric": r["metric"],
                                 "value": float(r["value"]), "ci_low": float(r["ci_low"]),
                                 "ci_high": float(r["ci_high"]), "wall_s": used["total"].get("wall_s"),
                                 "flops": used["total"].get("flops")})
    write_csv(out / "curve.csv", rows)
    curve_figure(rows, out / "curve")
    return rows


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

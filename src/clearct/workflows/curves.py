"""Data-efficiency curves: train on a share of the labelled training patients, evaluate on fixed held-out test
patients — for any model family (``crossval``'s ABMIL on features, ``finetune3d`` on volumes).

Each share (:func:`clearct.evaluate.curves.curve_splits`) is cross-validated as usual (folds, inner validation for
early stopping) on its patients; its fold ensemble predicts the held-out set, and that is the curve's value. A
share's run is an ordinary command run in ``OUT/share-<s>/`` (its splits.json lists the pool patients it leaves
out as ``unused``), so it resumes and writes compute.json like any other.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from clearct.common.compute import load_compute
from clearct.common.errors import ClearctError
from clearct.common.failures import Issues
from clearct.config import CrossvalConfig, Finetune3dConfig
from clearct.evaluate.curves import SHARES, curve_figure, curve_splits
from clearct.evaluate.tables import write_csv
from clearct.finetune3d.run import labelled_volume_items, run_finetune3d
from clearct.io.tables import LabelTable
from clearct.mil.crossval import run_crossval
from clearct.mil.data import load_cohort
from clearct.modeling.cv_runner import group_by_patient, holdout_from_column, patient_strata
from clearct.modeling.labels import read_task
from clearct.modeling.tasks import TaskSpec


def _labelled_items(command: str, cfg: CrossvalConfig | Finetune3dConfig, labels: LabelTable, spec: TaskSpec,
                    issues: Issues) -> list:
    """The command's labelled scans, as its run will see them (grids and features are not needed here)."""
    if command == "crossval":
        assert isinstance(cfg, CrossvalConfig)
        return load_cohort(cfg.features, labels, spec, labels_path=cfg.labels, issues=issues,
                           windows=cfg.use_windows).bags
    if command == "finetune3d":
        assert isinstance(cfg, Finetune3dConfig)
        return labelled_volume_items(cfg.scans, labels, spec, issues=issues, labels_path=cfg.labels)[0]
    raise ClearctError(f"no data-efficiency curve for command {command!r} (crossval, finetune3d)")


def run_curve(command: str, cfg: CrossvalConfig | Finetune3dConfig, out: Path,
              shares: Sequence[float] = SHARES, *, test_frac: float = 0.2) -> list[dict]:
    """Run ``command`` (``crossval`` or ``finetune3d``, with config ``cfg``) once per share into
    ``out/share-<s>/`` and collect the held-out metrics into ``out/curve.csv`` (+ ``curve.png``).

    ``cfg.split_column`` fixes the held-out patients where given; else ``test_frac`` (or ``cfg.test_frac`` when it
    is set) draws them. finetune3d shares one volume cache (``cfg.cache_dir`` or ``out/volume-cache``).
    """
    out = Path(out)
    labels, spec = read_task(cfg.labels, cfg.targets, cfg.task)
    items = _labelled_items(command, cfg, labels, spec, Issues())
    by_patient = group_by_patient(items)
    patients, strat = patient_strata(spec, by_patient)
    holdout = holdout_from_column(labels, cfg.split_column, items, cfg.labels) if cfg.split_column else None
    per_share = curve_splits(patients, strat, shares, folds=cfg.folds, seed=cfg.seed,
                             test_frac=cfg.test_frac or test_frac, holdout=holdout, val_frac=cfg.val_frac,
                             nested=cfg.nested)
    # each takes its own config class, which cfg's copies below keep
    runs: dict[str, Callable[[Any], int]] = {"crossval": run_crossval, "finetune3d": run_finetune3d}
    run = runs[command]
    extra = {"cache_dir": cfg.cache_dir or out / "volume-cache"} if isinstance(cfg, Finetune3dConfig) else {}
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


class CurveStep(BaseModel):
    """A curve step's config: the arguments of :func:`run_curve`. ``run`` is the family's
    command config; its folds, seed and ``test_frac`` fix the held-out patients and the nested shares."""

    model_config = ConfigDict(extra="forbid")
    command: Literal["crossval", "finetune3d"]
    run: CrossvalConfig | Finetune3dConfig
    out: Path
    shares: list[float]


def run_curve_step(step: CurveStep) -> int:
    run_curve(step.command, step.run, step.out, step.shares)
    return 0

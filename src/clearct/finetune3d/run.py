"""``clearct finetune3d``: the end-to-end 3D baseline — a 3D CNN trained on whole volumes per task, with the
folds, early stopping, outputs and compute accounting of ``crossval`` (:mod:`clearct.modeling.cv_runner`).

Flow: scans.csv joined with labels.csv (by patient or scan id) → every scan resampled once onto the grid and
cached (:mod:`clearct.finetune3d.volumes`) → the same patient-level splits as crossval for the same seed (or
``--splits`` from a crossval run) → one network per job, trained on its training patients with early stopping on
its validation patients → predictions.csv, metrics.csv, plots, ``fold-*/model.*``, summary.json, compute.json.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clearct.common import compute
from clearct.common.device import resolve_device
from clearct.common.errors import ClearctError
from clearct.common.failures import Issues
from clearct.common.runs import start_run
from clearct.config import Finetune3dConfig, VolumeTraining
from clearct.evaluate.splits import Job
from clearct.finetune3d.models import ARCHS
from clearct.finetune3d.store import load_volume_model
from clearct.finetune3d.train import VolumeItem, infer, train_volumes, volume_flops
from clearct.finetune3d.volumes import VolumeCache, VolumePrep, as_grid, as_spacing
from clearct.io import read_scans_table
from clearct.io.tables import LabelTable
from clearct.modeling.calibrate import check_calibration
from clearct.modeling.cv_runner import (
    Fitted,
    choose_splits,
    cross_predict,
    fingerprint,
    finish_cross_validation,
    fit_measured,
    group_by_patient,
    reuse_saved,
    with_calibration,
)
from clearct.modeling.labels import LabelJoin, read_task
from clearct.modeling.store import save_model
from clearct.modeling.tasks import TaskSpec
from clearct.preprocess import parse_windows

LOG = logging.getLogger("clearct")


def prep_from(cfg: Finetune3dConfig) -> VolumePrep:
    windows = tuple((w.name, w.lo, w.hi) for w in parse_windows(cfg.windows))
    spacing = None if cfg.spacing is None else as_spacing(cfg.spacing)
    return VolumePrep(as_grid(cfg.grid), spacing, windows, float(cfg.body_hu))


def volume_settings(cfg: Finetune3dConfig) -> VolumeTraining:
    """The training settings of a config (it inherits every field of :class:`VolumeTraining`); an unset
    ``width`` is 0.5 for the MONAI ResNets, 1 for the others."""
    s = VolumeTraining(**cfg.model_dump(include=set(VolumeTraining.model_fields)))
    return s.model_copy(update={"width": cfg.width if cfg.width is not None else
                                (0.5 if ARCHS[cfg.arch].widens else 1.0)})


def labelled_volume_items(scans: Path, labels: LabelTable | None, spec: TaskSpec | None, *, issues: Issues,
                          labels_path: Path | None = None) -> tuple[list[VolumeItem], LabelJoin | None]:
    """The scans of scans.csv joined with their label rows (no volume read yet); ``labels=None``: unlabelled."""
    join = None
    if labels is not None:
        assert spec is not None, "a label table is read for a task"
        join = LabelJoin(labels, spec, labels_path, issues, noun="scan", kind="scans")
    items = []
    for r in read_scans_table(scans):
        y = np.zeros(0, np.float32) if join is None else join.label(r.scan_id, r.patient_id)
        if y is not None:
            items.append(VolumeItem(r.scan_id, r.patient_id, r.path, y, series=r.series))
    return items, join


def load_volume_items(scans: Path, labels: LabelTable | None, spec: TaskSpec | None, prep: VolumePrep, *,
                      cache_dir: Path, workers: int, issues: Issues, labels_path: Path | None = None) -> list[VolumeItem]:
    """The labelled scans of ``scans`` with their grids loaded (read once, then from the cache). Scans without
    a label row, label rows without a scan, unknown label values and unreadable scans are one issue line each."""
    items, join = labelled_volume_items(scans, labels, spec, issues=issues, labels_path=labels_path)
    broken: set[str] = set()
    loaded = []
    for item, grid in VolumeCache(cache_dir, prep).load(items, workers=workers):
        if isinstance(grid, Exception):
            reason = str(grid) if isinstance(grid, ClearctError) else f"{type(grid).__name__}: {grid}"
            issues.add("unreadable_scans", f"{item.path}: {reason}; scan {item.scan_id} left out")
            broken.update((item.scan_id, item.patient_id))
            continue
        item.hu = grid
        loaded.append(item)
    if join is not None:
        join.finish(scans, broken)
    if not loaded:
        raise ClearctError("no usable scans (see the warnings above)", scans)
    return loaded


def fit_volume_job(job: Job, by_patient: dict[str, list[VolumeItem]], spec: TaskSpec, s: VolumeTraining,
                   prep: VolumePrep, *, seed: int, device: torch.device, folder: Path, resume: bool,
                   weights: Path | None, calibrate: str = "none") -> tuple[torch.nn.Module, dict]:
    """Train (or, with ``resume``, reload) one job's network and save it to ``folder`` (as crossval's fit_job)."""
    train = [it for p in job.train for it in by_patient[p]]
    val = [it for p in job.val for it in by_patient[p]]

    def outputs(net: torch.nn.Module, items: Sequence[VolumeItem]) -> torch.Tensor:
        return infer(net, items, prep, device, s.batch_size)

    key = fingerprint(s.model_dump(), spec.to_json(), prep.to_json(), job.train, job.val, seed, str(weights))
    saved = reuse_saved(folder, key, lambda f: load_volume_model(f, device), job.name, resume)
    if saved is not None:
        return with_calibration(folder, *saved, val, outputs, calibrate)
    fit = fit_measured(
        job, spec, train, val, calibrate=calibrate,
        train_fn=lambda job_spec, loss_fn: train_volumes(job_spec, loss_fn, train, val, prep, s, seed=seed,
                                                         device=device, weights=weights, desc=job.name),
        outputs_fn=outputs, flops_fn=lambda net: volume_flops(net, prep, s.batch_size, device))
    init = fit.extra
    meta = {"kind": "finetune3d", "job": job.name, "settings": s.model_dump(), "task": fit.spec.to_json(),
            "prep": prep.to_json(), "windows": prep.to_json()["windows"],
            "encoder": {"encoder": f"finetune3d:{s.arch}", "weights_sha256": init},
            "init_weights": None if weights is None else {"path": str(weights), "sha256": init},
            "thresholds": fit.thresholds, "train_patients": job.train, "val_patients": job.val, "seed": seed,
            "fingerprint": key, "history": fit.history, "compute": fit.compute}
    save_model(folder, fit.model, meta)
    return fit.model, meta


def run_finetune3d(cfg: Finetune3dConfig) -> int:
    device = resolve_device(cfg.device)
    labels, spec = read_task(cfg.labels, cfg.targets, cfg.task, command="finetune3d")
    check_calibration(cfg.calibrate, spec)
    read_scans_table(cfg.scans)  # a broken table is refused before the run folder exists
    cfg = cfg.model_copy(update={"task": spec.kind})  # config.yaml records the task, inferred or given
    out = start_run(cfg.out, "finetune3d", cfg)
    prep = prep_from(cfg)
    settings = volume_settings(cfg)
    issues = Issues()
    with compute.stage(out, "volumes"):
        items = load_volume_items(cfg.scans, labels, spec, prep, cache_dir=cfg.cache_dir or out / "volume-cache",
                                  workers=cfg.workers, issues=issues, labels_path=cfg.labels)
    by_patient = group_by_patient(items)
    splits = choose_splits(cfg, out, labels, spec, by_patient, issues)

    def fit(job: Job, i: int) -> Fitted[VolumeItem]:
        net, meta = fit_volume_job(job, by_patient, spec, settings, prep, seed=cfg.seed + i, device=device,
                                   folder=out / job.name, resume=cfg.resume, weights=cfg.weights,
                                   calibrate=cfg.calibrate)
        return Fitted.from_meta(lambda its: infer(net, its, prep, device, settings.batch_size), meta)

    sets = cross_predict(out, splits, by_patient, spec, fit)
    return finish_cross_validation("finetune3d", cfg, out, sets, {
        "scans_used": len(items), "patients": len(by_patient), "holdout_patients": len(splits.holdout),
        "jobs": len(splits.jobs), "arch": settings.arch, "prep": prep.to_json(), "calibration": cfg.calibrate},
        issues, device)

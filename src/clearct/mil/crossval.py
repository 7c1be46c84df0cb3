"""``clearct crossval``: patient-level (nested) cross-validation of MIL models on h5 features.

One fold runner (:func:`fit_job`) trains every model — plain folds, nested inner folds — and deploy reuses the
saved models. The splits, the pooling of fold predictions and the writers are shared with ``finetune3d``
(:mod:`clearct.modeling.cv_runner`). Outputs in ``--out``: ``splits.json``, ``fold-*/model.{safetensors,json}``,
``predictions.csv``, ``metrics.csv``, ``summary.json``, ``plots/{cv,holdout}-<target>.{png,svg}``,
``compute.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from clearct.common.device import map_large_blocks, resolve_device
from clearct.common.failures import Issues
from clearct.common.runs import start_run
from clearct.config import CrossvalConfig, MilTraining
from clearct.evaluate.splits import Job
from clearct.mil.data import Bag, Cohort, feature_files, gigabytes, load_cohort
from clearct.mil.models import MIL_MODELS
from clearct.mil.store import load_model, model_meta
from clearct.mil.train import infer, mil_flops, train_model
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
from clearct.modeling.labels import read_task
from clearct.modeling.store import save_model
from clearct.modeling.tasks import TaskSpec

LOG = logging.getLogger("clearct")


def training_of(cfg: CrossvalConfig) -> MilTraining:
    """The training settings of a crossval config (it inherits every field of :class:`MilTraining`)."""
    return MilTraining(**cfg.model_dump(include=set(MilTraining.model_fields)))


def fit_job(job: Job, by_patient: dict[str, list[Bag]], spec: TaskSpec, settings: MilTraining, cohort: Cohort, *,
            seed: int, device: torch.device, folder: Path, resume: bool = True,
            calibrate: str = "none") -> tuple[torch.nn.Module, dict]:
    """Train (or, with ``resume``, reload) the model of one job and save it to ``folder``.

    The validation part selects the epoch (early stopping), fits the calibration map (``calibrate``) and the F1
    threshold per output; the job's test patients are never seen here. ``meta["compute"]`` holds the measurement
    and FLOP estimate of the training.
    """
    train = [b for p in job.train for b in by_patient[p]]
    val = [b for p in job.val for b in by_patient[p]]

    def outputs(model: torch.nn.Module, bags: Sequence[Bag]) -> torch.Tensor:
        return infer(model, bags, device, settings.eval_instances)[0]

    key = fingerprint(settings.model_dump(), spec.to_json(), job.train, job.val, seed, cohort.encoder, cohort.windows)
    saved = reuse_saved(folder, key, lambda f: load_model(f, device), job.name, resume)
    if saved is not None:
        return with_calibration(folder, *saved, val, outputs, calibrate)
    fit = fit_measured(
        job, spec, train, val, regression_loss=settings.regression_loss, calibrate=calibrate,
        train_fn=lambda job_spec, loss_fn: (*train_model(job_spec, loss_fn, train, val, settings,
                                                         n_windows=max(len(cohort.windows), 1), seed=seed,
                                                         device=device, desc=job.name), None),
        outputs_fn=outputs, flops_fn=lambda model: mil_flops(model, train, settings, device))
    meta = model_meta(job=job.name, settings=settings, spec=fit.spec, in_dim=cohort.embed_dim, windows=cohort.windows,
                      encoder=cohort.encoder, thresholds=fit.thresholds, train=job.train, val=job.val, seed=seed,
                      fingerprint=key, history=fit.history)
    meta["compute"] = fit.compute
    save_model(folder, fit.model, meta)
    return fit.model, meta


def run_crossval(cfg: CrossvalConfig) -> int:
    MIL_MODELS.get(cfg.model)  # an unknown model is refused before anything is written
    device = resolve_device(cfg.device)
    labels, spec = read_task(cfg.labels, cfg.targets, cfg.task, command="crossval")
    check_calibration(cfg.calibrate, spec)
    feature_files(cfg.features)  # the inputs are checked before the run folder exists
    cfg = cfg.model_copy(update={"task": spec.kind})  # config.yaml records the task, inferred or given
    out = start_run(cfg.out, "crossval", cfg)
    issues = Issues()
    map_large_blocks()  # inference would otherwise grow the heap with every bag (common/device.py)
    cohort = load_cohort(cfg.features, labels, spec, labels_path=cfg.labels, issues=issues, windows=cfg.use_windows,
                         cache_bytes=gigabytes(cfg.feature_memory_gb))
    by_patient = group_by_patient(cohort.bags)
    splits = choose_splits(cfg, out, labels, spec, by_patient, issues)
    settings = training_of(cfg)

    def fit(job: Job, i: int) -> Fitted[Bag]:
        model, meta = fit_job(job, by_patient, spec, settings, cohort, seed=cfg.seed + i, device=device,
                              folder=out / job.name, resume=cfg.resume, calibrate=cfg.calibrate)
        return Fitted.from_meta(lambda bags: infer(model, bags, device)[0], meta)

    sets = cross_predict(out, splits, by_patient, spec, fit)
    return finish_cross_validation("crossval", cfg, out, sets, {
        "scans_used": len(cohort.bags), "patients": len(by_patient), "holdout_patients": len(splits.holdout),
        "jobs": len(splits.jobs), "encoder": cohort.encoder, "windows": cohort.windows,
        "calibration": cfg.calibrate}, issues, device)

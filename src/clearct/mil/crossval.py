"""``clearct crossval``: patient-level (nested) cross-validation of MIL models on h5 features.

One fold runner (:func:`fit_job`) trains every model — plain folds, nested inner folds — and deploy reuses the
saved models. The splits, the pooling of fold predictions and the writers are shared with ``finetune3d``
(:mod:`clearct.evaluate.crossfit`). Outputs in ``--out``: ``splits.json``, ``fold-*/model.{safetensors,json}``,
``predictions.csv``, ``metrics.csv``, ``summary.json``, ``plots/{cv,holdout}-<target>.{png,svg}``,
``compute.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from clearct.common import compute
from clearct.common.atomic import atomic_write_text
from clearct.common.device import resolve_device
from clearct.common.errors import ClearctError
from clearct.common.runs import start_run
from clearct.evaluate.crossfit import (
    Fitted,
    choose_splits,
    cross_predict,
    evaluate_and_write,
    group_by_patient,
    print_table,
    read_task,
    validation_thresholds,
)
from clearct.evaluate.splits import Job
from clearct.mil.data import Bag, Cohort, Issues, load_cohort
from clearct.mil.store import load_model, model_meta, save_model
from clearct.mil.tasks import TaskSpec, fit_normalisation, make_loss
from clearct.mil.train import TrainSettings, mil_flops, predict_scores, train_model

LOG = logging.getLogger("clearct")


def settings_from(cfg: object) -> TrainSettings:
    """The TrainSettings fields a command config sets (same names)."""
    return TrainSettings(**{f.name: getattr(cfg, f.name) for f in fields(TrainSettings) if hasattr(cfg, f.name)})


def fit_job(job: Job, by_patient: dict[str, list[Bag]], spec: TaskSpec, settings: TrainSettings, cohort: Cohort, *,
            seed: int, device: torch.device, folder: Path, resume: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train (or, with ``resume``, reload) the model of one job and save it to ``folder``.

    The validation part selects the epoch (early stopping) and the F1 threshold per output; the job's test
    patients are never seen here. A fresh model's ``meta["compute"]`` holds the FLOP estimate of its training
    (training steps, one validation pass per epoch and the threshold pass) and ``item_flops`` for predictions.
    """
    train = [b for p in job.train for b in by_patient[p]]
    val = [b for p in job.val for b in by_patient[p]]
    fingerprint = hashlib.sha256(json.dumps(
        [asdict(settings), spec.to_json(), job.train, job.val, seed, cohort.encoder, cohort.windows], sort_keys=True,
        default=str
    ).encode()).hexdigest()[:16]
    if resume and (folder / "model.json").is_file():
        try:
            model, meta = load_model(folder, device)
            if meta.get("fingerprint") == fingerprint:
                LOG.info("%s: reusing the trained model in %s", job.name, folder)
                meta["reused"] = True
                return model, meta
        except ClearctError as exc:
            LOG.warning("%s; training again", exc)
    if not train:
        raise ClearctError(f"{job.name}: no training bags")
    job_spec = TaskSpec.from_json(spec.to_json())
    y_train = np.stack([b.y for b in train])
    fit_normalisation(job_spec, y_train)
    loss_fn = make_loss(job_spec, y_train, settings.regression_loss)
    with compute.measure(job.name) as used:
        model, history = train_model(job_spec, loss_fn, train, val, settings, n_windows=max(len(cohort.windows), 1),
                                     seed=seed, device=device, desc=job.name)
        s_val = predict_scores(model, job_spec, val, device, settings.eval_instances)[0] if val else np.zeros((0, 0))
    thresholds = validation_thresholds(job_spec, np.stack([b.y for b in val]) if val else np.zeros((0, 0)), s_val)
    step, item = mil_flops(model, train, settings, device)
    steps = history[-1]["steps"] if history else 0
    used.steps, used.flops = steps, step * steps + item * len(val) * (len(history) + 1)
    meta = model_meta(job=job.name, settings=settings, spec=job_spec, in_dim=cohort.embed_dim, windows=cohort.windows,
                      encoder=cohort.encoder, thresholds=thresholds, train=job.train, val=job.val, seed=seed,
                      fingerprint=fingerprint, history=history)
    meta["compute"] = {**used.to_json(), "step_flops": step, "item_flops": item}
    save_model(folder, model, meta)
    return model, meta


def run_crossval(cfg) -> int:
    out = start_run(cfg.out, "crossval", cfg)
    device = resolve_device(cfg.device)
    labels, spec = read_task(cfg.labels, cfg.targets, cfg.task)
    issues = Issues()
    cohort = load_cohort(cfg.features, labels, spec, labels_path=cfg.labels, issues=issues, windows=cfg.windows)
    by_patient = group_by_patient(cohort.bags)
    splits = choose_splits(cfg, out, labels, spec, by_patient, issues)
    settings = settings_from(cfg)

    def fit(job: Job, i: int) -> Fitted:
        model, meta = fit_job(job, by_patient, spec, settings, cohort, seed=cfg.seed + i, device=device,
                              folder=out / job.name, resume=cfg.resume)
        job_spec = TaskSpec.from_json(meta["task"])
        return Fitted.from_meta(lambda bags: predict_scores(model, job_spec, bags, device)[0], meta)

    sets = cross_predict(out, splits, by_patient, spec, fit)
    rows = evaluate_and_write(out, sets, n_boot=cfg.bootstrap, seed=cfg.seed)
    summary = {"scans_used": len(cohort.bags), "patients": len(by_patient), "holdout_patients": len(splits.holdout),
               "jobs": len(splits.jobs), "issues": issues.summary(), "encoder": cohort.encoder,
               "windows": cohort.windows}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    compute.finish_run(out, device=device, items=len(cohort.bags))
    print_table(rows)
    left_out = sum(issues.counts.values())
    print(f"crossval: {len(cohort.bags)} scans of {len(by_patient)} patients used, {left_out} left out "
          f"({', '.join(f'{k} {v}' for k, v in issues.counts.items()) or 'none'}); results in {out}")
    return 0

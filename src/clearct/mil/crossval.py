"""``clearct crossval``: patient-level (nested) cross-validation of MIL models on h5 features.

One fold runner (:func:`fit_job`) trains every model — plain folds, nested inner folds — and deploy reuses the
saved models. Outputs in ``--out``: ``splits.json``, ``fold-*/model.{safetensors,json}``, ``predictions.csv``,
``metrics.csv``, ``summary.json``, ``plots/{cv,holdout}-<target>.{png,svg}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from clearct.common.atomic import atomic_write_text
from clearct.common.device import resolve_device
from clearct.common.errors import ClearctError
from clearct.common.runs import start_run
from clearct.evaluate.metrics import best_f1_threshold
from clearct.evaluate.plots import roc_pr_figure
from clearct.evaluate.splits import Job, Splits, make_splits, stratification_matrix
from clearct.evaluate.tables import Predictions, compute_metrics, prediction_rows, write_csv
from clearct.io.tables import read_labels_table
from clearct.mil.data import Bag, Cohort, Issues, load_cohort
from clearct.mil.store import load_model, model_meta, save_model
from clearct.mil.tasks import TaskSpec, eval_labels, fit_normalisation, make_loss, make_task
from clearct.mil.train import TrainSettings, predict_scores, train_model

LOG = logging.getLogger("clearct")


def settings_from(cfg: object) -> TrainSettings:
    """The TrainSettings fields a command config sets (same names)."""
    return TrainSettings(**{f.name: getattr(cfg, f.name) for f in fields(TrainSettings) if hasattr(cfg, f.name)})


def fit_job(job: Job, by_patient: dict[str, list[Bag]], spec: TaskSpec, settings: TrainSettings, cohort: Cohort, *,
            seed: int, device: torch.device, folder: Path, resume: bool = True) -> tuple[torch.nn.Module, dict]:
    """Train (or, with ``resume``, reload) the model of one job and save it to ``folder``.

    The validation part selects the epoch (early stopping) and the F1 threshold per output; the job's test
    patients are never seen here.
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
                return model, meta
        except ClearctError as exc:
            LOG.warning("%s; training again", exc)
    if not train:
        raise ClearctError(f"{job.name}: no training bags")
    job_spec = TaskSpec.from_json(spec.to_json())
    y_train = np.stack([b.y for b in train])
    fit_normalisation(job_spec, y_train)
    loss_fn = make_loss(job_spec, y_train, settings.regression_loss)
    model, history = train_model(job_spec, loss_fn, train, val, settings, n_windows=max(len(cohort.windows), 1),
                                 seed=seed, device=device, desc=job.name)
    thresholds = [0.5] * len(job_spec.output_names)
    if val and job_spec.kind in ("multilabel", "binary"):
        s_val, _ = predict_scores(model, job_spec, val, device, settings.eval_instances)
        y_val = eval_labels(job_spec, np.stack([b.y for b in val]))
        thresholds = [best_f1_threshold(y_val[:, j], s_val[:, j]) for j in range(s_val.shape[1])]
    meta = model_meta(job=job.name, settings=settings, spec=job_spec, in_dim=cohort.embed_dim, windows=cohort.windows,
                      encoder=cohort.encoder, thresholds=thresholds, train=job.train, val=job.val, seed=seed,
                      fingerprint=fingerprint, history=history)
    save_model(folder, model, meta)
    return model, meta


def predictions_from(spec: TaskSpec, bags: list[Bag], scores: np.ndarray, thresholds: np.ndarray,
                 fold: np.ndarray) -> Predictions:
    y = np.stack([b.y for b in bags])
    return Predictions(spec.kind, spec.output_names, np.array([b.patient_id for b in bags]),
                       np.array([b.scan_id for b in bags]), fold, eval_labels(spec, y), scores,
                       np.broadcast_to(thresholds, scores.shape).astype(np.float64).copy())


def evaluate_and_write(out: Path, sets: dict[str, Predictions], *, n_boot: int, seed: int) -> list[dict]:
    """predictions.csv, metrics.csv and the ROC/PR figures of every evaluated set."""
    pred_rows, metric_rows = [], []
    for name, p in sets.items():
        pred_rows += prediction_rows(p, name)
        metric_rows += compute_metrics(p, name, n_boot=n_boot, seed=seed)
        if p.kind in ("multilabel", "binary", "multiclass"):
            for j, target in enumerate(p.names):
                roc_pr_figure(p.y[:, j], p.scores[:, j], p.patients, target, out / "plots" / f"{name}-{target}",
                              n_boot=min(n_boot, 200), seed=seed)
    write_csv(out / "predictions.csv", pred_rows)
    write_csv(out / "metrics.csv", metric_rows)
    return metric_rows


def _holdout_from_column(labels, column: str, cohort: Cohort, path: Path) -> list[str]:
    if column not in labels.columns:
        raise ClearctError(f"split column {column!r} not in the labels table", path)
    marked = {i for i, v in zip(labels.ids, labels.columns[column]) if v.strip().lower() in ("test", "holdout")}
    key = (lambda b: b.patient_id) if labels.id_column == "patient_id" else (lambda b: b.scan_id)
    return sorted({b.patient_id for b in cohort.bags if key(b) in marked})


def print_table(rows: list[dict]) -> None:
    main = [r for r in rows if r["metric"] in ("auroc", "c_index", "mae")]
    for r in main:
        print(f"{r['set']:8s} {r['target']:20s} {r['metric']:8s} {r['value']:.3f} "
              f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]  folds {r['fold_mean']:.3f} ± {r['fold_sd']:.3f}")


def run_crossval(cfg) -> int:
    out = start_run(cfg.out, "crossval", cfg)
    device = resolve_device(cfg.device)
    labels = read_labels_table(cfg.labels)
    missing = [t for t in cfg.targets if t not in labels.columns]
    if missing:
        raise ClearctError(f"target column(s) {', '.join(missing)} not in the labels table "
                           f"(columns: {', '.join(labels.columns)})", cfg.labels)
    try:
        spec = make_task(cfg.task, list(cfg.targets), labels.columns)
    except ValueError as exc:
        raise ClearctError(str(exc), cfg.labels) from exc
    issues = Issues()
    cohort = load_cohort(cfg.features, labels, spec, labels_path=cfg.labels, issues=issues, windows=cfg.windows)
    by_patient: dict[str, list[Bag]] = {}
    for b in cohort.bags:
        by_patient.setdefault(b.patient_id, []).append(b)
    patients = sorted(by_patient)
    y_patient = np.stack([np.max([b.y for b in by_patient[p]], axis=0) for p in patients])
    strat = stratification_matrix(spec.kind, y_patient)

    if cfg.splits is not None or (cfg.resume and (out / "splits.json").is_file()):
        source = cfg.splits or out / "splits.json"
        splits, unknown = Splits.load(source).restrict(set(patients))
        if unknown:
            issues.add("patients_not_in_splits", f"{source}: {len(unknown)} patient(s) not in the splits "
                       f"({', '.join(unknown[:5])}); left out", len(unknown))
        LOG.info("reusing splits from %s", source)
    else:
        holdout = _holdout_from_column(labels, cfg.split_column, cohort, cfg.labels) if cfg.split_column else None
        splits = make_splits(patients, strat, folds=cfg.folds, seed=cfg.seed, nested=cfg.nested,
                             test_frac=cfg.test_frac, val_frac=cfg.val_frac, holdout=holdout)
    splits.save(out / "splits.json")

    settings = settings_from(cfg)
    holdout_bags = [b for p in splits.holdout for b in by_patient[p]]
    cv_scores: dict[int, list[np.ndarray]] = {}
    cv_thr: dict[int, list[np.ndarray]] = {}
    hold_scores, hold_thr = [], []
    for i, job in enumerate(splits.jobs):
        model, meta = fit_job(job, by_patient, spec, settings, cohort, seed=cfg.seed + i, device=device,
                              folder=out / job.name, resume=cfg.resume)
        job_spec = TaskSpec.from_json(meta["task"])
        test = [b for p in job.test for b in by_patient[p]]
        if test:
            cv_scores.setdefault(job.outer, []).append(predict_scores(model, job_spec, test, device)[0])
            cv_thr.setdefault(job.outer, []).append(np.asarray(meta["thresholds"]))
        if holdout_bags:
            hold_scores.append(predict_scores(model, job_spec, holdout_bags, device)[0])
            hold_thr.append(np.asarray(meta["thresholds"]))

    # one job per outer fold in plain CV; nested CV averages the inner models of an outer fold
    outer_test = {j.outer: j.test for j in splits.jobs}
    cv_bags, cv_s, cv_t, cv_f = [], [], [], []
    for k in sorted(cv_scores):
        bags = [b for p in outer_test[k] for b in by_patient[p]]
        cv_bags += bags
        cv_s.append(np.mean(cv_scores[k], axis=0))
        cv_t.append(np.broadcast_to(np.mean(cv_thr[k], axis=0), cv_s[-1].shape))
        cv_f.append(np.full(len(bags), k))
    sets = {"cv": predictions_from(spec, cv_bags, np.concatenate(cv_s), np.concatenate(cv_t), np.concatenate(cv_f))}
    if holdout_bags:
        sets["holdout"] = predictions_from(spec, holdout_bags, np.mean(hold_scores, axis=0),
                                       np.mean(hold_thr, axis=0), np.zeros(len(holdout_bags), int))
    rows = evaluate_and_write(out, sets, n_boot=cfg.bootstrap, seed=cfg.seed)
    summary = {"scans_used": len(cohort.bags), "patients": len(patients), "holdout_patients": len(splits.holdout),
               "jobs": len(splits.jobs), "issues": issues.summary(), "encoder": cohort.encoder,
               "windows": cohort.windows, "warnings": issues.lines}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    print_table(rows)
    left = {k: v for k, v in issues.counts.items() if k != "random_init_features"}
    print(f"crossval: {len(cohort.bags)} scans of {len(patients)} patients used, {sum(left.values())} left out "
          f"({', '.join(f'{k} {v}' for k, v in left.items()) or 'none'}); results in {out}")
    return issues.finish(out, "crossval")

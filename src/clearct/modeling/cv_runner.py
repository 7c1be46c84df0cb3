"""The cross-validation runner shared by the model families: ``crossval`` (MIL on slice features) and
``finetune3d`` (a 3D CNN on whole volumes) differ only in their items and in how one model is fitted.

An *item* is one scan with ``patient_id``, ``scan_id`` and its parsed label ``y`` (a MIL bag, a volume). This
module reloads or draws the patient-level splits (same seed → same folds for every family), trains (or, resuming,
reloads) one model per job inside a compute stage, pools the outer-fold predictions (nested inner models
averaged), predicts the held-out patients with the mean of all models, and writes predictions.csv, metrics.csv,
the ROC/PR and reliability plots and the printed table. Deploy uses the same writers. With ``--calibrate`` each
model's calibration map is fitted on its validation part before its thresholds (:mod:`clearct.modeling.calibrate`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from clearct.common import compute
from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError
from clearct.common.failures import Issues
from clearct.config import CrossvalConfig, Finetune3dConfig
from clearct.evaluate.errors import confident_errors, write_errors
from clearct.evaluate.metrics import best_f1_threshold
from clearct.evaluate.plots import reliability_figure, roc_pr_figure
from clearct.evaluate.splits import Job, Splits, make_splits, stratification_matrix
from clearct.evaluate.tables import Predictions, compute_metrics, prediction_rows, write_csv
from clearct.io.tables import LabelTable
from clearct.modeling.calibrate import fit_calibration
from clearct.modeling.store import save_meta
from clearct.modeling.tasks import TaskSpec, eval_labels, fit_normalisation, make_loss, scores_from_outputs

LOG = logging.getLogger("clearct")


class Item(Protocol):
    patient_id: str
    scan_id: str
    y: np.ndarray


ItemT = TypeVar("ItemT", bound=Item)  # a family's item type (a MIL bag, a volume), kept through the runner


def group_by_patient(items: Sequence[ItemT]) -> dict[str, list[ItemT]]:
    by_patient: dict[str, list[ItemT]] = {}
    for it in items:
        by_patient.setdefault(it.patient_id, []).append(it)
    return by_patient


def patient_strata(spec: TaskSpec, by_patient: Mapping[str, Sequence[Item]]) -> tuple[list[str], np.ndarray]:
    """Sorted patient ids and the binary matrix the splits stratify on (a patient's label = max over scans)."""
    patients = sorted(by_patient)
    y = np.stack([np.max([it.y for it in by_patient[p]], axis=0) for p in patients])
    return patients, stratification_matrix(spec.kind, y)


def holdout_from_column(labels: LabelTable, column: str, items: Sequence[Item], path: Path) -> list[str]:
    """Patients whose rows are marked ``test``/``holdout`` in ``column`` of labels.csv."""
    if column not in labels.columns:
        raise ClearctError(f"split column {column!r} not in the labels table", path)
    marked = {i for i, v in zip(labels.ids, labels.columns[column]) if v.strip().lower() in ("test", "holdout")}
    key = (lambda it: it.patient_id) if labels.id_column == "patient_id" else (lambda it: it.scan_id)
    return sorted({it.patient_id for it in items if key(it) in marked})


def choose_splits(cfg: CrossvalConfig | Finetune3dConfig, out: Path, labels: LabelTable, spec: TaskSpec,
                  by_patient: Mapping[str, Sequence[Item]], issues: Issues) -> Splits:
    """``--splits FILE``, else ``out/splits.json`` on a resumed run, else new stratified splits from ``--seed``;
    saved to ``out/splits.json``. ``cfg`` carries the validation fields shared by crossval and finetune3d."""
    patients, strat = patient_strata(spec, by_patient)
    if cfg.splits is not None or (cfg.resume and (out / "splits.json").is_file()):
        source = cfg.splits or out / "splits.json"
        splits, unknown = Splits.load(source).restrict(set(patients))
        if unknown:
            issues.add("patients_not_in_splits", f"{source}: {len(unknown)} patient(s) not in the splits "
                       f"({', '.join(unknown[:5])}); left out", len(unknown))
        if splits.unused:
            LOG.info("%s: %d patient(s) left out on purpose (not in this share)", source, len(splits.unused))
        LOG.info("reusing splits from %s", source)
    else:
        items = [it for p in patients for it in by_patient[p]]
        holdout = holdout_from_column(labels, cfg.split_column, items, cfg.labels) if cfg.split_column else None
        splits = make_splits(patients, strat, folds=cfg.folds, seed=cfg.seed, nested=cfg.nested,
                             test_frac=cfg.test_frac, val_frac=cfg.val_frac, holdout=holdout)
    splits.save(out / "splits.json")
    return splits


def fingerprint(*parts: Any) -> str:
    """Short hash of everything a fold model depends on; resume reuses a saved model only when it matches."""
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()[:16]


def reuse_saved(folder: Path, fingerprint_: str, load: Callable[[Path], tuple[Any, dict]], name: str,
                resume: bool) -> tuple[Any, dict] | None:
    """The model saved in ``folder`` when ``resume`` is on and it was trained with the same fingerprint."""
    if not (resume and (folder / "model.json").is_file()):
        return None
    try:
        model, meta = load(folder)
    except ClearctError as exc:
        LOG.warning("%s; training again", exc)
        return None
    if meta.get("fingerprint") != fingerprint_:
        return None
    LOG.info("%s: reusing the trained model in %s", name, folder)
    meta["reused"] = True
    return model, meta


@dataclass
class JobResult:
    model: Any
    spec: TaskSpec  # the job's copy (regression: with the training labels' normalisation)
    thresholds: list[float]
    history: list[dict]
    compute: dict  # the training's measurement: wall, CPU, peaks, FLOPs, steps, step_flops, item_flops
    extra: Any = None


def fit_measured(job: Job, spec: TaskSpec, train: Sequence[ItemT], val: Sequence[ItemT], *,
                 train_fn: Callable[[TaskSpec, Any], tuple[Any, list[dict], Any]],
                 outputs_fn: Callable[[Any, Sequence[ItemT]], Any],
                 flops_fn: Callable[[Any], tuple[int, int]], regression_loss: str = "l1",
                 calibrate: str = "none") -> JobResult:
    """What every family's job fit shares: the task copy with its label normalisation and loss weights from the
    training labels, the measured training (``train_fn(job_spec, loss_fn)`` → model, history, extra), the raw
    validation outputs (``outputs_fn(model, items)`` → (n, n_out) CPU tensor), the calibration map and the F1
    thresholds on the validation part (:func:`calibrate_job`), and the FLOP estimate: ``flops_fn(model)`` gives
    one training step's and one item's forward FLOPs; × the steps, + one validation pass per epoch and the
    threshold pass."""
    if not train:
        raise ClearctError(f"{job.name}: no training scans")
    job_spec = TaskSpec.from_json(spec.to_json())
    y_train = np.stack([it.y for it in train])
    fit_normalisation(job_spec, y_train)
    loss_fn = make_loss(job_spec, y_train, regression_loss)
    with compute.measure(job.name) as used:
        model, history, extra = train_fn(job_spec, loss_fn)
        job_spec, thresholds = calibrate_job(job_spec, val, outputs_fn(model, val) if val else None, calibrate,
                                             job.name)
    step, item = flops_fn(model)
    used.steps = history[-1]["steps"] if history else 0
    used.flops = step * used.steps + item * len(val) * (len(history) + 1)
    return JobResult(model, job_spec, thresholds, history, {**used.to_json(), "step_flops": step,
                                                            "item_flops": item}, extra)


def calibrate_job(spec: TaskSpec, val: Sequence[Item], out_val: Any, method: str,
                  name: str) -> tuple[TaskSpec, list[float]]:
    """A job's spec with the calibration map of ``method`` fitted on its validation outputs ``out_val`` (None when
    the job has no validation part), and the F1 thresholds chosen on the (calibrated) validation scores."""
    spec = spec.uncalibrated()
    if out_val is None:
        out_val = torch.zeros((0, spec.n_out))
    y_val = np.stack([it.y for it in val]) if val else np.zeros((0, len(spec.targets)), np.float32)
    spec.calibration = fit_calibration(spec, out_val, y_val, method, name)
    s_val = scores_from_outputs(spec, out_val).numpy() if val else np.zeros((0, 0))
    return spec, validation_thresholds(spec, y_val, s_val)


def with_calibration(folder: Path, model: Any, meta: dict, val: Sequence[ItemT],
                     outputs_fn: Callable[[Any, Sequence[ItemT]], Any], method: str) -> tuple[Any, dict]:
    """A model reloaded by resume, with the calibration asked now: saved with another ``--calibrate``, its map is
    fitted again on its validation part, its thresholds are chosen again and its model.json is rewritten (the
    weights are the same, so the model is not trained again)."""
    spec = TaskSpec.from_json(meta["task"])
    if spec.calibration_method == method:
        return model, meta
    spec, thresholds = calibrate_job(spec, val, outputs_fn(model, val) if val else None, method, meta["job"])
    meta.update(task=spec.to_json(), thresholds=thresholds)
    save_meta(folder, meta)
    LOG.info("%s: calibration %s fitted on the validation part of the saved model", meta["job"], method)
    return model, meta


def validation_thresholds(spec: TaskSpec, y_val: np.ndarray, s_val: np.ndarray) -> list[float]:
    """F1-maximising threshold per output on the validation part (0.5 where there is none or no threshold)."""
    if len(s_val) == 0 or spec.kind not in ("multilabel", "binary"):
        return [0.5] * len(spec.output_names)
    y = eval_labels(spec, y_val)
    return [best_f1_threshold(y[:, j], s_val[:, j]) for j in range(s_val.shape[1])]


@dataclass
class Fitted(Generic[ItemT]):
    """A trained (or reloaded) model of one job, as the driver needs it.

    ``outputs``: items → raw outputs; ``spec``: the job's task with its calibration map; ``flops``/``steps``:
    estimate of the training and validation passes (None when reloaded); ``item_flops``: one forward of one item,
    used to add the test and held-out predictions; ``trained``: the compute record saved when a reloaded model was
    trained.
    """

    outputs: Callable[[Sequence[ItemT]], Any]
    spec: TaskSpec
    thresholds: np.ndarray
    flops: int | None = None
    steps: int | None = None
    item_flops: int | None = None
    trained: dict | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_meta(cls, outputs: Callable[[Sequence[ItemT]], Any], meta: dict) -> Fitted[ItemT]:
        """From a saved model's ``model.json``: its task (with the calibration map), thresholds and the compute
        record of its training (that record is the job's cost only when the model was trained now, not
        reloaded)."""
        used, reused = meta.get("compute", {}), bool(meta.get("reused", False))
        return cls(outputs, TaskSpec.from_json(meta["task"]), np.asarray(meta["thresholds"]),
                   flops=None if reused else used.get("flops"), steps=None if reused else used.get("steps"),
                   item_flops=used.get("item_flops"), trained=used if reused else None)

    def predict(self, items: Sequence[ItemT]) -> tuple[np.ndarray, np.ndarray | None]:
        """The scores of ``items`` and, for a calibrated model, its scores before the map (one forward pass)."""
        out = self.outputs(items)
        before = scores_from_outputs(self.spec.uncalibrated(), out).numpy() if self.spec.calibration else None
        return scores_from_outputs(self.spec, out).numpy(), before


def cross_predict(out: Path, splits: Splits, by_patient: Mapping[str, Sequence[ItemT]], spec: TaskSpec,
                  fit: Callable[[Job, int], Fitted[ItemT]]) -> dict[str, Predictions]:
    """Fit every job (``fit(job, index)``), each in a compute stage; return the ``cv`` (and ``holdout``) sets."""
    holdout = [it for p in splits.holdout for it in by_patient[p]]
    cv_scores: dict[int, list[tuple[np.ndarray, np.ndarray | None]]] = {}
    cv_thr: dict[int, list[np.ndarray]] = {}
    hold_scores, hold_thr = [], []
    for i, job in enumerate(splits.jobs):
        test = [it for p in job.test for it in by_patient[p]]
        with compute.stage(out, job.name) as m:
            fitted = fit(job, i)
            if test:
                cv_scores.setdefault(job.outer, []).append(fitted.predict(test))
                cv_thr.setdefault(job.outer, []).append(np.asarray(fitted.thresholds))
            if holdout:
                hold_scores.append(fitted.predict(holdout))
                hold_thr.append(np.asarray(fitted.thresholds))
        m.steps = fitted.steps
        if fitted.flops is not None:
            m.flops = fitted.flops + (fitted.item_flops or 0) * (len(test) + len(holdout))
        m.extra = {"train_patients": len(job.train), "val_patients": len(job.val), "test_scans": len(test),
                   "holdout_scans": len(holdout), "reused": fitted.trained is not None, **fitted.extra}
        if fitted.trained is not None:
            m.extra["trained"] = fitted.trained

    # one job per outer fold in plain CV; nested CV averages the inner models of an outer fold
    outer_test = {j.outer: j.test for j in splits.jobs}
    cv_items, cv_s, cv_b, cv_t, cv_f = [], [], [], [], []
    for k in sorted(cv_scores):
        items = [it for p in outer_test[k] for it in by_patient[p]]
        cv_items += items
        scores, before = _mean_scores(cv_scores[k])
        cv_s.append(scores)
        cv_b.append(before)
        cv_t.append(np.broadcast_to(np.mean(cv_thr[k], axis=0), scores.shape))
        cv_f.append(np.full(len(items), k))
    cv_before = [b for b in cv_b if b is not None]
    sets = {"cv": predictions_from(spec, cv_items, np.concatenate(cv_s), np.concatenate(cv_t), np.concatenate(cv_f),
                                   np.concatenate(cv_before) if len(cv_before) == len(cv_b) else None)}
    if holdout:
        scores, before = _mean_scores(hold_scores)
        sets["holdout"] = predictions_from(spec, holdout, scores, np.mean(hold_thr, axis=0),
                                           np.zeros(len(holdout), int), before)
    return sets


def _mean_scores(pairs: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[np.ndarray, np.ndarray | None]:
    """The mean calibrated scores of several models, and their mean scores before calibration (None when a model
    has no map)."""
    before = [b for _, b in pairs if b is not None]
    return np.mean([s for s, _ in pairs], axis=0), np.mean(before, axis=0) if len(before) == len(pairs) else None


def predictions_from(spec: TaskSpec, items: Sequence[Item], scores: np.ndarray, thresholds: np.ndarray,
                     fold: np.ndarray, uncalibrated: np.ndarray | None = None) -> Predictions:
    y = np.stack([it.y for it in items])
    return Predictions(spec.kind, spec.output_names, np.array([it.patient_id for it in items]),
                       np.array([it.scan_id for it in items]), fold, eval_labels(spec, y), scores,
                       np.broadcast_to(thresholds, scores.shape).astype(np.float64).copy(), uncalibrated)


def evaluate_and_write(out: Path, sets: dict[str, Predictions], *, n_boot: int, seed: int) -> list[dict]:
    """predictions.csv, metrics.csv, and per classification target the ROC/PR figure, the reliability diagram
    (``<set>-<target>-reliability``) and, for calibrated models, the diagram before and after calibration
    (``<set>-<target>-calibration``) of every evaluated set, and errors.csv (the most confident false positives and
    negatives per target)."""
    pred_rows, metric_rows, error_rows = [], [], []
    for name, p in sets.items():
        pred_rows += prediction_rows(p, name)
        error_rows += confident_errors(p, name)
        metric_rows += compute_metrics(p, name, n_boot=n_boot, seed=seed)
        if p.kind in ("multilabel", "binary", "multiclass"):
            for j, target in enumerate(p.names):
                stem = f"{name}-{target}"
                roc_pr_figure(p.y[:, j], p.scores[:, j], p.patients, target, out / "plots" / stem,
                              n_boot=min(n_boot, 200), seed=seed)
                reliability_figure(p.y[:, j], {name: p.scores[:, j]}, f"{name} — {target}",
                                   out / "plots" / f"{stem}-reliability")
                if p.uncalibrated is not None:
                    reliability_figure(p.y[:, j], {"before calibration": p.uncalibrated[:, j],
                                                   "after calibration": p.scores[:, j]},
                                       f"{name} — {target}", out / "plots" / f"{stem}-calibration")
    write_csv(out / "predictions.csv", pred_rows)
    write_csv(out / "metrics.csv", metric_rows)
    if any(p.kind in ("multilabel", "binary") for p in sets.values()):
        write_errors(out / "errors.csv", error_rows)
    return metric_rows


def finish_cross_validation(command: str, cfg: CrossvalConfig | Finetune3dConfig, out: Path,
                            sets: dict[str, Predictions], summary: dict, issues: Issues, device: Any) -> int:
    """The end of a cross-validation command: metrics and plots, summary.json (``summary`` + the issue counts and
    warnings), compute.json, the table, one line on stdout and failures.csv; returns the command's exit code (1 when
    an input was broken)."""
    rows = evaluate_and_write(out, sets, n_boot=cfg.bootstrap, seed=cfg.seed)
    atomic_write_text(out / "summary.json", json.dumps({**summary, "issues": issues.summary(),
                                                        "warnings": issues.lines}, indent=1))
    compute.finish_run(out, device=device, items=summary["scans_used"])
    print_table(rows)
    left = {k: v for k, v in issues.counts.items() if k != "random_init_features"}
    print(f"{command}: {summary['scans_used']} scans of {summary['patients']} patients used, "
          f"{sum(left.values())} left out ({', '.join(f'{k} {v}' for k, v in left.items()) or 'none'}); "
          f"results in {out}")
    return issues.finish(out, command)


def print_table(rows: list[dict]) -> None:
    main = [r for r in rows if r["metric"] in ("auroc", "c_index", "mae")]
    for r in main:
        print(f"{r['set']:8s} {r['target']:20s} {r['metric']:8s} {r['value']:.3f} "
              f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]  folds {r['fold_mean']:.3f} ± {r['fold_sd']:.3f}")

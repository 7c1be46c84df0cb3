"""``clearct deploy``: the mean-probability ensemble of a crossval (MIL on features) or finetune3d (3D CNN on
volumes) folder's fold models on an external cohort, with the same metrics and plots (probabilities through each
model's calibration map when the models were calibrated, and then the reliability before and after it), a loud
refusal when deployment patients were in training, and viewers of the most confident errors (``errors/``, listed in
summary.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clearct.common import compute
from clearct.common.atomic import atomic_write_text
from clearct.common.device import map_large_blocks, resolve_device
from clearct.common.errors import ClearctError
from clearct.common.failures import Issues
from clearct.common.runs import start_run
from clearct.config import DeployConfig
from clearct.evaluate.tables import write_csv
from clearct.finetune3d.run import load_volume_items
from clearct.finetune3d.store import VolumeEnsemble
from clearct.inference.attention import attention_rows
from clearct.inference.ensembles import check_encoder, load_ensemble
from clearct.inference.review import review_errors
from clearct.io.tables import LabelTable, read_labels_table, read_scans_table
from clearct.mil.data import feature_files, gigabytes, load_cohort
from clearct.mil.store import MilEnsemble
from clearct.modeling.cv_runner import evaluate_and_write, predictions_from, print_table


def _cohort(cfg: DeployConfig, ensemble: MilEnsemble | VolumeEnsemble, labels: LabelTable,
            issues: Issues) -> tuple[list, dict, Path]:
    """The external cohort as the ensemble's input: feature bags (MIL) or volumes on the models' grid (3D);
    with the encoder the features came from and the cohort's path."""
    spec = ensemble.spec
    if isinstance(ensemble, VolumeEnsemble):  # kind "finetune3d"
        assert cfg.scans is not None, "checked by _check_cohort"
        items = load_volume_items(cfg.scans, labels, spec, ensemble.prep, cache_dir=cfg.out / "volume-cache",
                                  workers=2, issues=issues, labels_path=cfg.labels)
        return items, ensemble.encoder, cfg.scans
    assert cfg.features is not None, "checked by _check_cohort"
    map_large_blocks()  # inference would otherwise grow the heap with every bag (common/device.py)
    cohort = load_cohort(cfg.features, labels, spec, labels_path=cfg.labels, issues=issues, dtype=np.float32,
                         windows=ensemble.window_names, cache_bytes=gigabytes(cfg.feature_memory_gb))
    check_encoder(ensemble, cohort.encoder, cfg.features)
    return cohort.bags, cohort.encoder, cfg.features


def _check_cohort(cfg: DeployConfig, ensemble: MilEnsemble | VolumeEnsemble) -> None:
    """The external cohort's input for the ensemble's family is given and readable (before anything is written)."""
    if isinstance(ensemble, VolumeEnsemble):
        if cfg.scans is None:
            raise ClearctError("holds finetune3d models: deploy them with --scans scans.csv of the external cohort",
                               cfg.model)
        read_scans_table(cfg.scans)
        return
    if cfg.features is None:
        raise ClearctError("holds crossval models: deploy them with --features of the external cohort", cfg.model)
    feature_files(cfg.features)


def run_deploy(cfg: DeployConfig) -> int:
    ensemble = load_ensemble(cfg.model, resolve_device(cfg.device))
    spec = ensemble.spec
    labels = read_labels_table(cfg.labels)
    missing = [t for t in spec.targets if t not in labels.columns]
    if missing:
        raise ClearctError(f"the model's target column(s) {', '.join(missing)} are not in the labels table", cfg.labels)
    _check_cohort(cfg, ensemble)
    out = start_run(cfg.out, "deploy", cfg)  # once the inputs are known to be usable: a refusal writes nothing
    print(f"deploy: {cfg.labels}: {labels.keyed}")
    issues = Issues()
    items, encoder, source = _cohort(cfg, ensemble, labels, issues)
    overlap = sorted({it.patient_id for it in items} & ensemble.training_patients)
    if overlap and not cfg.allow_overlap:
        raise ClearctError(f"{len(overlap)} deployment patient(s) were used to train these models "
                           f"({', '.join(overlap[:5])}); refusing — an external cohort must be new patients "
                           "(override with --allow-overlap)", source)
    if overlap:
        issues.add("overlap_with_training", f"{source}: {len(overlap)} patient(s) were in training; "
                   "deploying anyway (--allow-overlap)", len(overlap))
    outputs, attn = ensemble.outputs(items)
    p = predictions_from(spec, items, ensemble.scores(outputs), ensemble.thresholds, np.zeros(len(items), int),
                         ensemble.scores(outputs, calibrated=False) if ensemble.calibrated else None)
    rows = evaluate_and_write(out, {"deploy": p}, n_boot=cfg.bootstrap, seed=cfg.seed)
    if attn is not None:  # slice attention exists for MIL models only
        write_csv(out / "attention.csv", (r for b, a in zip(items, attn) for r in attention_rows(b, a, ensemble.windows)))
    viewers = review_errors(out, ensemble, cfg.model, features=cfg.features, scans=cfg.scans,
                            lesions=cfg.lesions) if cfg.error_viewers else []
    summary = {"scans_used": len(items), "models": len(ensemble.models), "model_kind": ensemble.kind,
               "calibration": spec.calibration_method,
               "issues": issues.summary(), "overlap_patients": overlap, "encoder": encoder, "warnings": issues.lines,
               "error_viewers": viewers}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    compute.finish_run(out, device=ensemble.device, items=len(items))
    print_table(rows)
    left = sum(v for k, v in issues.counts.items() if k not in ("random_init_features", "overlap_with_training"))
    print(f"deploy: {len(ensemble.models)} models on {len(items)} scans, {left} left out; results in {out}")
    return issues.finish(out, "deploy")

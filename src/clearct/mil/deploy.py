"""``clearct deploy``: the mean-probability ensemble of a crossval folder's fold models on an external cohort,
with the same metrics and plots, and a loud refusal when deployment patients were in training."""

from __future__ import annotations

import json

import numpy as np

from clearct.common.atomic import atomic_write_text
from clearct.common.device import resolve_device
from clearct.common.errors import ClearctError
from clearct.common.runs import start_run
from clearct.evaluate.tables import write_csv
from clearct.io.tables import read_labels_table
from clearct.mil.attention import attention_rows, check_encoder
from clearct.mil.crossval import evaluate_and_write, predictions_from, print_table
from clearct.mil.data import Issues, load_cohort
from clearct.mil.store import load_ensemble


def run_deploy(cfg) -> int:
    out = start_run(cfg.out, "deploy", cfg)
    ensemble = load_ensemble(cfg.model, resolve_device(cfg.device))
    spec = ensemble.spec
    labels = read_labels_table(cfg.labels)
    missing = [t for t in spec.targets if t not in labels.columns]
    if missing:
        raise ClearctError(f"the model's target column(s) {', '.join(missing)} are not in the labels table", cfg.labels)
    issues = Issues()
    cohort = load_cohort(cfg.features, labels, spec, labels_path=cfg.labels, issues=issues, dtype=np.float32,
                         windows=ensemble.window_names)
    check_encoder(ensemble, cohort.encoder, cfg.features)
    overlap = sorted({b.patient_id for b in cohort.bags} & ensemble.training_patients)
    if overlap and not cfg.allow_overlap:
        raise ClearctError(f"{len(overlap)} deployment patient(s) were used to train these models "
                           f"({', '.join(overlap[:5])}); refusing — an external cohort must be new patients "
                           "(override with --allow-overlap)", cfg.features)
    if overlap:
        issues.add("overlap_with_training", f"{cfg.features}: {len(overlap)} patient(s) were in training; "
                   "deploying anyway (--allow-overlap)", len(overlap))
    scores, attn = ensemble.predict(cohort.bags)
    p = predictions_from(spec, cohort.bags, scores, ensemble.thresholds, np.zeros(len(cohort.bags), int))
    rows = evaluate_and_write(out, {"deploy": p}, n_boot=cfg.bootstrap, seed=cfg.seed)
    write_csv(out / "attention.csv", [r for b, a in zip(cohort.bags, attn) for r in attention_rows(b, a, ensemble.windows)])
    summary = {"scans_used": len(cohort.bags), "models": len(ensemble.models), "issues": issues.summary(),
               "overlap_patients": overlap, "encoder": cohort.encoder, "warnings": issues.lines}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    print_table(rows)
    left = sum(v for k, v in issues.counts.items() if k not in ("random_init_features", "overlap_with_training"))
    print(f"deploy: {len(ensemble.models)} models on {len(cohort.bags)} scans, {left} left out; results in {out}")
    return issues.finish(out, "deploy")

"""The demo's report, built only from what the stages wrote into the demo folder (tables, logs, feature and
model folders), so it can be rebuilt at any time from a finished run."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import yaml

from clearct.config import CrossvalSettings, DemoConfig, PretrainSettings, SynthSettings
from clearct.evaluate.localization import attention_hits
from clearct.io import read_ct
from clearct.io.tables import LesionBox, read_labels_table, read_lesions_table, read_scans_table
from clearct.preprocess import parse_windows
from clearct.report.document import Figure, Report, Table
from clearct.report.figures import (
    example_slices_figure,
    loss_curve_figure,
    read_loss_log,
    roc_overview_figure,
)
from clearct.report.layouts import ARM_TITLES, CONTROL, DEMO_TASKS, DemoLayout
from clearct.synth.labels import LOCATIONS, LUNG_FINDINGS

CHOSEN_EXAMPLES = 3  # scans shown with example slices / attention figures


class DemoPlanLike(Protocol):
    """What the report reads of a :class:`clearct.workflows.demo.DemoPlan` (report sits below workflows, so it
    names the plan by its fields)."""

    @property
    def synth(self) -> SynthSettings: ...
    @property
    def pretrain(self) -> PretrainSettings: ...
    @property
    def crossval(self) -> CrossvalSettings: ...


@dataclass
class ChosenScan:
    scan_id: str
    path: Path
    boxes: list[LesionBox]


def choose_scans(cohort: Path, count: int) -> list[ChosenScan]:
    """The ``count`` scans of a synth cohort with the most distinct annotated lesion locations (then most boxes,
    then scan id) — the most instructive ones to show."""
    boxes: dict[str, list[LesionBox]] = {}
    for b in read_lesions_table(cohort / "lesions.csv"):
        boxes.setdefault(b.scan_id, []).append(b)
    records = [r for r in read_scans_table(cohort / "scans.csv") if r.scan_id in boxes]
    records.sort(key=lambda r: (-len({b.label for b in boxes[r.scan_id]}), -len(boxes[r.scan_id]), r.scan_id))
    return [ChosenScan(r.scan_id, r.path, boxes[r.scan_id]) for r in records[:count]]


def read_metrics(path: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    """metrics.csv as {(set, target, metric): {value, ci_low, ci_high, fold_mean, fold_sd, n}}; {} if absent."""
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {(r["set"], r["target"], r["metric"]): {k: float(r[k]) if r[k] else np.nan
                                                        for k in ("value", "ci_low", "ci_high", "fold_mean",
                                                                  "fold_sd", "n")}
                for r in csv.DictReader(fh)}


def read_predictions(path: Path, set_name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{target: (labels, probabilities)} of one set of a predictions.csv; {} if absent."""
    if not path.is_file():
        return {}
    out: dict[str, tuple[list[float], list[float]]] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["set"] == set_name:
                y, s = out.setdefault(r["target"], ([], []))
                y.append(float(r["label"]))
                s.append(float(r["probability"]))
    return {t: (np.asarray(y), np.asarray(s)) for t, (y, s) in out.items()}


def _fmt_ci(m: dict[str, float] | None) -> str:
    if m is None or not np.isfinite(m["value"]):
        return "–"
    if not np.isfinite(m["ci_low"]):
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{m['ci_low']:.2f}, {m['ci_high']:.2f}]"


def _fmt_sd(m: dict[str, float] | None) -> str:
    if m is None or not np.isfinite(m["fold_mean"]):
        return "–"
    sd = f" ± {m['fold_sd']:.3f}" if np.isfinite(m["fold_sd"]) else ""
    return f"{m['fold_mean']:.3f}{sd}"


def auroc_table(metrics: dict, targets: list[str], prevalence: dict[str, tuple[float, float]],
                control: dict | None = None) -> Table:
    """Per target: prevalence in both cohorts, pooled CV AUROC with CI, fold mean ± sd, external AUROC with CI,
    and with ``control`` (metrics of the marked-features crossval and deploy) the positive control's AUROCs."""
    rows = []
    for t in [*targets, "macro"]:
        prev = prevalence.get(t)
        row = [t, f"{prev[0]:.2f} / {prev[1]:.2f}" if prev else "",
               _fmt_ci(metrics.get(("cv", t, "auroc"))), _fmt_sd(metrics.get(("cv", t, "auroc"))),
               _fmt_ci(metrics.get(("cv", t, "auprc"))), _fmt_ci(metrics.get(("deploy", t, "auroc")))]
        rows.append(row + ([_fmt_ci(control.get((set_name, t, "auroc"))) for set_name in ("cv", "deploy")]
                           if control else []))
    header = ["target", "prevalence (cohort / external)", "CV AUROC [95% CI]", "CV AUROC fold mean ± sd",
              "CV AUPRC [95% CI]", "external AUROC [95% CI]"]
    control_header = ["control, key slices marked: CV AUROC", "control: external AUROC"]
    return Table(header + (control_header if control else []), rows,
                 "pooled out-of-fold predictions; CIs from patient-level bootstrap resamples")


def _above_chance(metrics: dict, set_name: str, targets: list[str]) -> list[str]:
    return [t for t in targets if (m := metrics.get((set_name, t, "auroc"))) and m["ci_low"] > 0.5]


def learning_verdict(metrics: dict, targets: list[str], control: dict | None = None) -> str:
    """What the LECL arm learned (the targets whose pooled CV AUROC interval lies above 0.5) and, with
    ``control``, what the positive control says about where a shortfall comes from."""
    above = _above_chance(metrics, "cv", targets)
    external = [t for t in above if t in _above_chance(metrics, "deploy", targets)]
    if not above:
        verdict = "No location's cross-validated AUROC interval lies above 0.5 for the LECL encoder."
    else:
        ext = (f"; on the external cohort also for {', '.join(external)}" if external
               else "; on the external cohort no interval lies above 0.5")
        verdict = (f"LECL: {len(above)} of {len(targets)} locations learned beyond chance (95% CI of the CV AUROC "
                   f"above 0.5): {', '.join(above)}{ext}.")
    macro = None if control is None else control.get(("cv", "macro", "auroc"))
    if control is None or macro is None:
        return verdict
    found = _above_chance(control, "cv", targets)
    return (f"{verdict} Positive control (last columns): the same features with the key-slice rows of every "
            "annotated lesion moved along a direction of its location (one standard deviation per feature, "
            f"root-mean-square), the same ABMIL settings: macro CV AUROC {_fmt_ci(macro)}, {len(found)} of "
            f"{len(targets)} locations above chance. "
            + ("The MIL stage finds lesion slices once the embeddings set them apart: what limits the LECL columns "
               "is how much of the lesions the encoder puts into the slice embeddings."
               if len(found) > len(above) else "")
            + " Training scans whose lesions are not annotated carry no marks, so the CV control stays below 1.")


def _macro(metrics: dict, set_name: str) -> dict | None:
    return metrics.get((set_name, "macro", "auroc"))


def comparison_table(arm_metrics: dict[str, dict], targets: list[str], titles: dict[str, str]) -> Table:
    """Rows = arms: macro CV AUROC [CI], macro external AUROC [CI], then the CV AUROC of every target."""
    rows = []
    for arm, metrics in arm_metrics.items():
        cells = [f"{m['value']:.2f}" if (m := metrics.get(("cv", t, "auroc"))) else "–" for t in targets]
        rows.append([titles[arm], _fmt_ci(_macro(metrics, "cv")), _fmt_ci(_macro(metrics, "deploy")), *cells])
    return Table(["encoder", "macro CV AUROC [95% CI]", "macro external AUROC [95% CI]", *targets], rows,
                 "pooled out-of-fold predictions (CV) and the fold ensemble on the external cohort; CIs from "
                 "patient-level bootstrap resamples; per-target columns: CV AUROC")


def _synth_settings(cohort: Path) -> dict:
    return yaml.safe_load((cohort / "config.yaml").read_text())["synth"]


def cohort_rows(at: DemoLayout, targets: list[str]) -> tuple[Table, dict[str, tuple[float, float]]]:
    """The cohort summary table and the per-target prevalence (cohort, external)."""
    rows, prevalence = [], {}
    cols: dict[str, list[float]] = {}
    for name, folder in (("training (cross-validated)", at.cohort), ("external (deployed)", at.external)):
        s = _synth_settings(folder)
        labels = read_labels_table(folder / "labels.csv")
        lesions = read_lesions_table(folder / "lesions.csv")
        prev = [float(np.mean([float(v) for v in labels.column(t)])) for t in targets]
        for t, p in zip(targets, prev):
            cols.setdefault(t, []).append(p)
        acq = s["acquisition"] + (f", noise {s['noise_hu']} HU" if s.get("noise_hu") else "")
        rows.append([name, str(len(labels.ids)), f"{s['slices']} × {s['size']} × {s['size']}", f"seed {s['seed']}",
                     acq, str(len({b.scan_id for b in lesions})), str(len(lesions)),
                     f"{np.mean(prev):.2f}"])
    prevalence = {t: (v[0], v[1]) for t, v in cols.items()}
    table = Table(["cohort", "patients = scans", "slices × pixels", "seed", "acquisition", "annotated scans",
                   "lesion boxes", "mean location prevalence"], rows)
    return table, prevalence


def _example_figure(at: DemoLayout) -> Figure | None:
    examples = []
    for scan in choose_scans(at.cohort, CHOSEN_EXAMPLES):
        volume = read_ct(scan.path)
        key = max({b.slice_index for b in scan.boxes}, key=lambda z: sum(b.slice_index == z for b in scan.boxes))
        boxes = [b for b in scan.boxes if b.slice_index == key]
        examples.append((f"{scan.scan_id} slice {key}", volume.hu[key], boxes))
    if not examples:
        return None
    path = example_slices_figure(at.figures / "examples.png", examples, parse_windows("lung,abdomen"))
    return Figure(str(path.relative_to(at.root)), "Training-cohort key slices in the lung (−1500..500 HU) and abdomen "
                  "(−175..275 HU) windows; red: the lesions.csv boxes used by LECL.")


def _attention_figures(at: DemoLayout, arm: str, models: str) -> list[Figure]:
    """The figures of an arm's attention stage on the external cohort, captioned with the scan's true lesion
    locations and the scores of the deploy stage of the same models for them."""
    boxes: dict[str, set[str]] = {}
    for b in read_lesions_table(at.external / "lesions.csv"):
        boxes.setdefault(b.scan_id, set()).add(b.label)
    scores = _deploy_scores(at.deploy("location", arm) / "predictions.csv")
    out = []
    for path in sorted((at.attention(arm) / "figures").glob("*.png")):
        locations = sorted(boxes.get(path.stem, ()))
        said = ", ".join(f"{t} {scores[(path.stem, t)]:.2f}" for t in locations if (path.stem, t) in scores)
        out.append(Figure(str(path.relative_to(at.root)),
                          f"{path.stem} (external cohort): attention of {models} over slice position per "
                          f"window; red dashes: key slices of its lesions ({', '.join(locations) or 'none'}); below: "
                          f"the most attended slices (● = a key slice). Scores for its locations: "
                          f"{said or '–'}."))
    return out


def _deploy_scores(path: Path) -> dict[tuple[str, str], float]:
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {(r["scan_id"], r["target"]): float(r["probability"]) for r in csv.DictReader(fh)}


def _predict_table(at: DemoLayout) -> tuple[Table, str] | None:
    path = at.predict / "prediction.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    labels = read_labels_table(at.external / "labels.csv")
    pid = result["scan_id"].removesuffix("_ct")
    truth = {t: labels.column(t)[labels.ids.index(pid)] for t in result["scores"]} if pid in labels.ids else {}
    rows = [[t, f"{s:.3f}", f"{result['thresholds'].get(t, float('nan')):.3f}",
             "yes" if result["predictions"].get(t) else "no", truth.get(t, "?")] for t, s in result["scores"].items()]
    return Table(["target", "score", "threshold", "call", "truth"], rows), result["scan"]


def _artefacts() -> Table:
    entries = [
        ("cohort/", "training cohort: scans/ (DICOM), scans.csv, labels.csv, lesions.csv, config.yaml, synth.log"),
        ("external/", "external cohort (seed + 1, external acquisition preset), same files"),
        ("encoders/lecl/, encoders/supervised/", "pretraining runs: encoder.safetensors + encoder.json (the frozen "
         "encoder), checkpoint.pt, pretrain-log.csv, compute.json; slice-cache/ is shared"),
        ("features/<arm>/{cohort,external}/", "one <scan_id>.h5 per scan (slice × window embeddings) for each arm: "
         "lecl, random (the same architecture at random init), supervised, control (the LECL features with the "
         "annotated key slices marked)"),
        ("location/<arm>/crossval/", "lesion location: splits.json, fold-*/model.safetensors + model.json, "
         "predictions.csv, metrics.csv, plots/ (ROC + PR with bootstrap bands and reliability per target), summary.json"),
        ("location/<arm>/deploy/", "the fold ensemble on the external cohort: predictions.csv, metrics.csv, plots/"),
        ("lung/<arm>/crossval/, lung/<arm>/deploy/", "lung abnormalities (lung window), same layout"),
        ("attention/lecl/, attention/control/", "attention.csv (attention per slice and window for every external "
         "scan) and figures/"),
        ("predict/", "prediction.json, attention.csv, attention.png of one scan"),
        ("figures/", "the report's figures (PNG + SVG)"),
        ("report.md, report.html", "this report"),
        ("demo-times.json, demo.log, config.yaml", "stage times, the demo's log and its resolved configuration; "
         "every stage folder holds a step.json (its settings, for resuming)"),
    ]
    return Table(["path (under the demo folder)", "what"], [[f"`{p}`", w] for p, w in entries])


def _arm_metrics(at: DemoLayout, task: str) -> dict[str, dict]:
    return {arm: read_metrics(at.crossval(task, arm) / "metrics.csv") | read_metrics(at.deploy(task, arm) / "metrics.csv")
            for arm in DEMO_TASKS[task]}


def _training_line(at: DemoLayout, arm: str) -> str:
    manifest = json.loads((at.encoder(arm) / "encoder.json").read_text())
    t, data = manifest["info"].get("training", {}), manifest["info"].get("data", {})
    extra = ""
    if t.get("method") == "lecl":
        scale = t.get("lesion_crop_scale")
        extra = (f", λ = {t.get('lam'):g}, heads {t.get('mlp_dim')}→{t.get('proj_dim')}, lesion crops "
                 + (f"{scale[0]:g}–{scale[1]:g} × the box" if scale else "image-relative"))
    share = t.get("lesion_share")
    return (f"`{manifest['arch']}` ({manifest['embed_dim']}-d, {manifest['input_size']} px), {t.get('epochs')} "
            f"epoch(s) at batch {t.get('batch_size')}, base lr {t.get('lr'):g} (× batch / 256){extra}; "
            f"{data.get('training_slices', data.get('slices', '?'))} training slices, {data.get('lesion_slices', '?')}"
            f" key slices" + (f", {share:.0%} of each epoch drawn from annotated slices" if share else "")
            + f". Final loss {manifest['info'].get('final_loss') or float('nan'):.4f}.")


def build_demo_report(at: DemoLayout, cfg: DemoConfig, plan: DemoPlanLike, times: dict) -> Report:
    """Draw the figures into the demo's ``figures/`` and assemble the report from the stages' outputs. ``cfg`` is
    the demo's config, ``plan`` its resolved settings (:class:`clearct.workflows.demo.DemoPlan`)."""
    targets = list(LOCATIONS)
    root, figures = at.root, at.figures
    pretrain, synth = plan.pretrain, plan.synth
    report = Report("clearct demo report")
    total = sum(t.seconds for t in times.values())
    cpu = sum(t.cpu_seconds for t in times.values())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    location = _arm_metrics(at, "location")
    lung = _arm_metrics(at, "lung")
    hits = {arm: attention_hits(at.attention(arm) / "attention.csv", at.deploy("location", arm) / "predictions.csv",
                                at.external / "lesions.csv")
            for arm in ("lecl", CONTROL) if (at.attention(arm) / "attention.csv").is_file()}
    report.add(
        "Summary",
        f"The whole CLEAR pipeline on synthetic phantom CT (`clearct demo --size {cfg.size}`): two DICOM cohorts "
        f"were synthesised; a `{pretrain.arch}` slice encoder was pretrained with LECL (λ = {pretrain.lam:g}) and, "
        "as the supervised ceiling, the same network on per-slice lesion labels; every slice was embedded in the lung "
        "and abdomen windows by both and by the same network at random init; ABMIL was cross-validated "
        f"({plan.crossval.folds} folds) on the eight lesion locations and the seven lung abnormalities (lung window) "
        "and deployed on the external cohort; a positive control marks the annotated lesion slices in the LECL "
        "features; one scan was run through `predict`.",
        f"The synthetic lesions are larger and brighter than clearct synth's defaults (`--lesion-contrast "
        f"{synth.lesion_contrast:g}`, `--lesion-size-mm {synth.lesion_size_mm[0]:g},{synth.lesion_size_mm[1]:g}`) "
        "to give a few CPU minutes of pretraining a chance; the numbers below say nothing about real CT. What a CPU "
        "user can expect at other sizes and budgets: docs/pretraining.md and docs/benchmark.md.",
        f"Stage time of this invocation {total:.0f} s wall, {cpu:.0f} s CPU, on {os.cpu_count()} CPU core(s), "
        f"device `{cfg.device}`, load average {load:.1f} at the end (stages marked reused were finished by an "
        "earlier run; a wall time far above CPU time / cores means the machine was shared).",
    )
    cohorts, prevalence = cohort_rows(at, targets)
    section = report.add("Cohorts", "Both cohorts are clearct synth phantoms (chest-abdomen-pelvis range); the "
                         "external one uses another seed (other patients) and the `external` acquisition preset "
                         "(more noise, sharp kernel, thicker slices, +8 HU offset) — the paper's external validation "
                         "in miniature.")
    section.tables.append(cohorts)
    example = _example_figure(at)
    if example:
        section.figures.append(example)

    section = report.add("Pretraining",
                         f"LECL: {_training_line(at, 'lecl')}",
                         f"Supervised ceiling (per-slice binary cross-entropy on the lesion locations, every slice a "
                         f"lesion covers is a positive): {_training_line(at, 'supervised')}",
                         f"Random init: `{pretrain.arch}` as built, never trained (the registry's seeded "
                         "initialisation).")
    panels = [(title, *read_loss_log(log)) for title, log in (
        (f"LECL loss (symmetric, λ = {pretrain.lam:g})", at.encoder("lecl") / "pretrain-log.csv"),
        ("supervised ceiling: BCE", at.encoder("supervised") / "pretrain-log.csv")) if log.is_file()]
    if panels:
        path = loss_curve_figure(figures / "pretrain-loss.png", panels)
        section.figures.append(Figure(str(path.relative_to(root)), "Training loss per logged step."))

    section = report.add("Lesion location: AUROC",
                         "Multi-label ABMIL on the frozen slice embeddings of both windows (one instance per slice "
                         "and window), the same settings for every encoder. Macro = mean over the locations.")
    section.tables.append(comparison_table(location, targets, ARM_TITLES))
    section.paragraphs.append(learning_verdict(location["lecl"], targets, location[CONTROL] or None))
    section.tables.append(auroc_table(location["lecl"], targets, prevalence, location[CONTROL] or None))
    curves = [(title, c) for title, c in (
        ("LECL, cross-validation", read_predictions(at.crossval("location", "lecl") / "predictions.csv", "cv")),
        ("LECL, external cohort", read_predictions(at.deploy("location", "lecl") / "predictions.csv", "deploy")),
        ("supervised ceiling, CV", read_predictions(at.crossval("location", "supervised") / "predictions.csv", "cv")),
        ("positive control, CV", read_predictions(at.crossval("location", CONTROL) / "predictions.csv", "cv")))
        if c]
    if curves:
        path = roc_overview_figure(figures / "roc.png", curves)
        section.figures.append(Figure(str(path.relative_to(root)), "ROC curves per lesion location; per-target "
                                      "plots with bootstrap bands lie in location/<arm>/{crossval,deploy}/plots/."))

    section = report.add("Lung abnormalities: AUROC",
                         "Multi-label ABMIL on the lung-window instances of the same feature files (clearct synth's "
                         "Task 2 labels), cross-validated and deployed on the external cohort.")
    section.tables.append(comparison_table(lung, list(LUNG_FINDINGS), ARM_TITLES))

    share = {arm: h for arm, h in hits.items() if h.scans}
    section = report.add("Attention over slices",
                         "Where the models look (`clearct attention` on the external cohort): the attention "
                         "weights of the fold models, averaged."
                         + "".join(f" {ARM_TITLES[arm]}: for {h.hits} of {h.scans} positive external scans "
                                   f"({h.share:.0%}) the most attended slice lies within ±1 slice of a lesion of the "
                                   "location predicted most strongly." for arm, h in share.items()))
    section.figures += _attention_figures(at, "lecl", "the LECL fold ensemble")
    control_figures = _attention_figures(at, CONTROL, "the positive control's fold ensemble (key slices marked)")
    if control_figures:
        section = report.add("Attention over slices: positive control",
                             "The positive control's models on the same external scans, their key slices marked "
                             "as in training: where attention goes when the slice embeddings do carry the lesions.")
        section.figures += control_figures

    predicted = _predict_table(at)
    if predicted:
        table, scan = predicted
        section = report.add("One scan: clearct predict", f"`clearct predict {scan} --model location/lecl/crossval "
                             "--encoder encoders/lecl` read the DICOM series, embedded it and ran the fold ensemble:")
        section.tables.append(table)
        section.figures.append(Figure(str((at.predict / "attention.png").relative_to(root)),
                                      "predict's attention figure for that scan."))

    section = report.add("Stage times")
    section.tables.append(Table(["stage", "wall (s)", "CPU (s)", "status"],
                                [[k, f"{v.seconds:.1f}", f"{v.cpu_seconds:.1f}", v.status] for k, v in times.items()]
                                + [["total", f"{total:.1f}", f"{cpu:.1f}", ""]]))
    section = report.add("Where everything lies", f"All paths are under `{root}`.")
    section.tables.append(_artefacts())
    return report

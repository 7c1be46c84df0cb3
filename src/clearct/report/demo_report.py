"""The demo's report, written for the person who ran it: what ran, on what, how long, what came out, what it means
and what to try next. It is built only from what the stages wrote into the demo folder (tables, logs, model,
heatmap, viewer and DICOM files), so it can be rebuilt at any time from a finished run, and it quotes this run
only: figures measured elsewhere belong in the docs it names. The numbers and the sentences about them come from
:mod:`clearct.report.demo_numbers`."""

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
from clearct.evaluate.localization import (
    HeatmapPointing,
    attention_hits,
    grow_box,
    heatmap_pointing,
    lesion_on_slice,
    peak,
    peak_in_box,
)
from clearct.io import read_ct
from clearct.io.heatmaps import read_heatmaps
from clearct.io.tables import LesionBox, read_labels_table, read_lesions_table, read_scans_table
from clearct.preprocess import parse_windows
from clearct.report.demo_numbers import (
    Metrics,
    arm_metrics,
    auroc_table,
    calibration_sentence,
    calibration_table,
    chance_sentence,
    compare_sentence,
    comparison_table,
    fmt_ci,
    learned_arm,
    macro,
    ordering_sentence,
    pointing_by_location,
    pointing_sentence,
    pointing_table,
    read_predictions,
    reliability_plot,
    worst_calibrated,
)
from clearct.report.document import Figure, Report, Section, Table
from clearct.report.figures import (
    example_slices_figure,
    loss_curve_figure,
    read_loss_log,
    roc_overview_figure,
)
from clearct.report.heatmaps import PointingPanel, pointing_figure
from clearct.report.layouts import ARM_TITLES, CONTROL, DEMO_ARMS, DemoLayout
from clearct.synth.labels import LOCATIONS, LUNG_FINDINGS

CHOSEN_EXAMPLES = 3  # scans shown with example slices
POINTING_PANELS = 6  # lesion slices drawn per arm in the pointing-game figures
DICOM_OBJECTS = {"sr": "Comprehensive SR (TID 1500 measurement report): probability, threshold and call per location",
                 "kos": "Key Object Selection of the most attended slices"}


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


def _rel(at: DemoLayout, path: Path) -> str:
    return path.relative_to(at.root).as_posix()


def _link(at: DemoLayout, path: Path, text: str | None = None) -> str:
    return f"[{text or path.name}]({_rel(at, path)})"


def _synth_settings(cohort: Path) -> dict:
    return yaml.safe_load((cohort / "config.yaml").read_text())["synth"]


def cohort_rows(at: DemoLayout, targets: list[str]) -> tuple[Table, dict[str, tuple[float, float]]]:
    """The cohort summary table and the per-target prevalence (cohort, external)."""
    rows = []
    cols: dict[str, list[float]] = {}
    for name, folder in (("training (cross-validated)", at.cohort), ("external (deployed)", at.external)):
        s = _synth_settings(folder)
        labels = read_labels_table(folder / "labels.csv")
        lesions = read_lesions_table(folder / "lesions.csv")
        prev = [float(np.mean([float(v) for v in labels.column(t)])) for t in targets]
        for t, p in zip(targets, prev):
            cols.setdefault(t, []).append(p)
        acq = s["acquisition"] + (f", noise {s['noise_hu']} HU" if s.get("noise_hu") else "")
        rows.append([name, str(len(labels.ids)), f"{s['slices']} × {s['size']} × {s['size']}", s["format"],
                     f"seed {s['seed']}", acq, str(len({b.scan_id for b in lesions})), str(len(lesions)),
                     f"{np.mean(prev):.2f}"])
    prevalence = {t: (v[0], v[1]) for t, v in cols.items()}
    table = Table(["cohort", "patients = scans", "slices × pixels", "format", "seed", "acquisition",
                   "annotated scans", "lesion boxes", "mean location prevalence"], rows)
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
    return Figure(_rel(at, path), "Training-cohort key slices in the lung (−1500..500 HU) and abdomen (−175..275 HU) "
                  "windows; red: the lesions.csv boxes LECL and the supervised ceiling train with.")


def _lesion_boxes(at: DemoLayout) -> dict[str, list[LesionBox]]:
    boxes: dict[str, list[LesionBox]] = {}
    for b in read_lesions_table(at.external / "lesions.csv"):
        boxes.setdefault(b.scan_id, []).append(b)
    return boxes


def _deploy_scores(path: Path) -> dict[tuple[str, str], float]:
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {(r["scan_id"], r["target"]): float(r["probability"]) for r in csv.DictReader(fh)}


def _attention_figures(at: DemoLayout, arm: str) -> list[Figure]:
    """The figures of an arm's attention stage on the external cohort, captioned with the scan's true lesion
    locations and the scores of the deploy stage of the same models for them."""
    boxes = _lesion_boxes(at)
    scores = _deploy_scores(at.deploy("location", arm) / "predictions.csv")
    out = []
    for path in sorted((at.attention(arm) / "figures").glob("*.png")):
        locations = sorted({b.label for b in boxes.get(path.stem, [])})
        said = ", ".join(f"{t} {scores[(path.stem, t)]:.2f}" for t in locations if (path.stem, t) in scores)
        out.append(Figure(_rel(at, path),
                          f"{path.stem} (external cohort): attention of the {ARM_TITLES[arm]} fold ensemble over "
                          f"slice position per window; red dashes: key slices of its lesions "
                          f"({', '.join(locations) or 'none'}); below: the most attended slices (● = a key slice). "
                          f"Its scores for these locations: {said or '–'}."))
    return out


def _viewer_links(at: DemoLayout, folder: Path) -> list[str]:
    return [_link(at, p, p.stem) for p in sorted(folder.glob("*.html"))]


def _overlay_figures(at: DemoLayout, heatmaps: Path, scan_ids: list[str], scores: dict[tuple[str, str], float],
                     source: str) -> list[Figure]:
    """Per scan, the overlay of its most attended instance that lies on a lesion (else its most attended one),
    captioned with whether the lesion's map peaks in its box."""
    boxes = _lesion_boxes(at)
    out = []
    for scan_id in scan_ids:
        h5 = heatmaps / f"{scan_id}.h5"
        if not h5.is_file():
            continue
        h = read_heatmaps(h5)
        on = [(k, lesion) for k in range(len(h))
              if (lesion := lesion_on_slice(boxes.get(scan_id, []), int(h.slice_index[k]))) is not None]
        k, lesion = on[0] if on else (0, None)
        s, window = int(h.slice_index[k]), h.windows[int(h.window[k])][0]
        png = heatmaps / f"{scan_id}-slice{s:04d}-{window}.png"
        if not png.is_file():
            continue
        if lesion is not None and lesion.label in h.targets:
            hit = peak_in_box(h.maps[k, h.targets.index(lesion.label)], (lesion.x1, lesion.y1, lesion.x2, lesion.y2))
            what = (f"a {lesion.label} lesion lies on this slice (score {scores.get((scan_id, lesion.label), np.nan):.2f}"
                    f"); the peak of the {lesion.label} map {'falls' if hit else 'does not fall'} in its box grown "
                    "by half")
        else:
            what = "no annotated lesion lies on this slice"
        out.append(Figure(_rel(at, png), f"{source}: {scan_id}, slice {s}, {window} window — attention rank {k + 1} "
                          f"of the scan ({h.attention[k]:.3f}); {what}. One panel per location: {h.title} of "
                          f"{h.encoder} at {h.layer}, the location's score in the panel title."))
    return out


def _pointing_figure(at: DemoLayout, arm: str, count: int = POINTING_PANELS) -> Figure | None:
    """The pointing game drawn for one arm: per external scan (in scan order, the first ``count`` whose top
    attended slices include a lesion slice) its most attended lesion slice with the map of the lesion's location."""
    boxes = _lesion_boxes(at)
    paths = {r.scan_id: r.path for r in read_scans_table(at.external / "scans.csv")}
    panels: list[PointingPanel] = []
    for h5 in sorted((at.attention(arm) / "heatmaps").glob("*.h5")):
        if len(panels) == count:
            break
        h = read_heatmaps(h5)
        found = [(k, lesion) for k in range(len(h))
                 if (lesion := lesion_on_slice(boxes.get(h.scan_id, []), int(h.slice_index[k]))) is not None
                 and lesion.label in h.targets]
        if not found or h.scan_id not in paths:
            continue
        k, lesion = found[0]
        s, window = int(h.slice_index[k]), h.windows[int(h.window[k])]
        hu = read_ct(paths[h.scan_id]).hu[s]
        heatmap = h.maps[k, h.targets.index(lesion.label)]
        box = (lesion.x1, lesion.y1, lesion.x2, lesion.y2)
        hit = peak_in_box(heatmap, box)
        panels.append(PointingPanel(f"{h.scan_id} · slice {s} · {window[0]}\n{lesion.label}: "
                                    f"{'hit' if hit else 'miss'} (attention rank {k + 1})",
                                    hu, window, heatmap, box, grow_box(box),
                                    peak(heatmap), hit))
    if not panels:
        return None
    path = pointing_figure(at.figures / f"pointing-{arm}.png", panels, f"{ARM_TITLES[arm]}: the pointing game")
    hits = sum(p.hit for p in panels)
    return Figure(_rel(at, path), f"{ARM_TITLES[arm]}, the pointing game drawn: for the first {len(panels)} "
                  "external scans with a lesion slice among their top attended slices, the most attended one, with "
                  "the map of the lesion's own location; red: the lesion box, dashed: grown by half; cross: the "
                  f"map's peak (green in the grown box, orange outside) — {hits} of {len(panels)} hit here.")


def _training_line(at: DemoLayout, arm: str) -> str:
    manifest = json.loads((at.encoder(arm) / "encoder.json").read_text())
    t, data = manifest["info"].get("training", {}), manifest["info"].get("data", {})
    extra = ""
    if t.get("method") == "lecl":
        scale = t.get("lesion_crop_scale")
        extra = (f", λ = {t.get('lam'):g}, heads {t.get('mlp_dim')}→{t.get('proj_dim')}, lesion crops "
                 + (f"{scale[0]:g}–{scale[1]:g} × the box" if scale else "image-relative"))
    share = t.get("lesion_share")
    steps = _steps(at, arm)
    return (f"`{manifest['arch']}` ({manifest['embed_dim']}-d, {manifest['input_size']} px), {t.get('epochs')} "
            f"epoch(s) = {steps if steps is not None else '?'} steps at batch {t.get('batch_size')}, base lr "
            f"{t.get('lr'):g} (× batch / 256){extra}; {data.get('training_slices', data.get('slices', '?'))} "
            f"training slices, {data.get('lesion_slices', '?')} key slices"
            + (f", {share:.0%} of each epoch drawn from annotated slices" if share else "")
            + f". Final loss {manifest['info'].get('final_loss') or float('nan'):.4f}.")


def _steps(at: DemoLayout, arm: str) -> int | None:
    path = at.encoder(arm) / "compute.json"
    if not path.is_file():
        return None
    steps = json.loads(path.read_text()).get("total", {}).get("steps")
    return int(steps) if steps is not None else None


def _predict_section(report: Report, at: DemoLayout, learned: str) -> None:
    path = at.predict / "prediction.json"
    if not path.is_file():
        return
    result = json.loads(path.read_text())
    labels = read_labels_table(at.external / "labels.csv")
    pid = result["scan_id"].removesuffix("_ct")
    truth = {t: labels.column(t)[labels.ids.index(pid)] for t in result["scores"]} if pid in labels.ids else {}
    rows = [[t, f"{s:.3f}", f"{result['thresholds'].get(t, float('nan')):.3f}",
             "yes" if result["predictions"].get(t) else "no", truth.get(t, "?")] for t, s in result["scores"].items()]
    present = [t for t in result["scores"] if truth.get(t) == "1"]
    called = [t for t in result["scores"] if result["predictions"].get(t)]
    scan = Path(result["scan"])
    section = report.add(
        "One scan: clearct predict",
        f"`clearct predict {scan.relative_to(at.root) if scan.is_relative_to(at.root) else scan} --model "
        f"{_rel(at, at.crossval('location', learned))} --encoder {_encoder_arg(at, learned)} --lesions "
        f"external/lesions.csv` read this external DICOM series, embedded its slices with the {ARM_TITLES[learned]} "
        f"encoder and ran its fold ensemble. The scan has lesions in {len(present)} location(s) "
        f"({', '.join(present) or 'none'}); the ensemble called {len(set(called) & set(present))} of them"
        + (f" and {len(set(called) - set(present))} location(s) it does not have "
           f"({', '.join(sorted(set(called) - set(present)))})" if set(called) - set(present) else "")
        + ".")
    section.tables.append(Table(["location", "score", "threshold", "call", "truth"], rows))
    viewer = at.predict / "viewer.html"
    if viewer.is_file():
        section.paragraphs.append(f"Scroll the scan in the model's windows with its attention, heatmaps, lesion boxes "
                                  f"and scores: {_link(at, viewer, 'predict/viewer.html')}.")
    written = result.get("dicom_outputs", {})
    if written:
        section.tables.append(Table(["DICOM object", "what"], [
            [_link(at, Path(p), Path(p).relative_to(at.root).as_posix() if Path(p).is_relative_to(at.root) else p),
             DICOM_OBJECTS.get(k, _parametric_map(k))] for k, p in written.items()],
            "written next to the study, referencing the source images by their SOP Instance UIDs"))
    section.figures.append(Figure(_rel(at, at.predict / "attention.png"), "predict's attention figure for this scan."))
    section.figures += _overlay_figures(at, at.predict / "heatmaps", [result["scan_id"]],
                                        {(result["scan_id"], t): s for t, s in result["scores"].items()}, "predict")


def _parametric_map(key: str) -> str:
    """What ``pm-<target>-<window>`` holds (targets and windows have no hyphen)."""
    target, _, window = key.removeprefix("pm-").rpartition("-")
    return (f"Parametric Map of the {target} heatmaps of the {window}-window slices (32-bit float, on the source "
            "images' grid)")


def _encoder_arg(at: DemoLayout, arm: str) -> str:
    config = yaml.safe_load((at.predict / "config.yaml").read_text()) if (at.predict / "config.yaml").is_file() else {}
    encoder = str((config.get("predict") or {}).get("encoder", ""))
    return _rel(at, Path(encoder)) if encoder and Path(encoder).is_relative_to(at.root) else encoder or arm


def _errors_section(report: Report, at: DemoLayout, learned: str) -> None:
    rows = []
    for folder, where in ((at.crossval("location", learned), "CV"), (at.deploy("location", learned), "external")):
        table = folder / "errors.csv"
        if not table.is_file():
            continue
        with open(table, newline="") as fh:
            for r in csv.DictReader(fh):
                if r["rank"] == "1" and r.get("viewer"):
                    rows.append([where, r["target"], r["error"].replace("_", " "), r["scan_id"],
                                 f"{float(r['probability']):.3f}", f"{float(r['threshold']):.3f}",
                                 _link(at, folder / r["viewer"], "viewer")])
    if not rows:
        return
    section = report.add(f"The most confident errors of {ARM_TITLES[learned]}",
                         "Per location the false positive with the highest score and the false negative with the "
                         "lowest, cross-validated and on the external cohort; each viewer shows the scan with the "
                         "attention of the models that scored it (their errors.csv lists up to three per kind).")
    section.tables.append(Table(["set", "location", "error", "scan", "score", "threshold", "viewer"], rows))


def _next_steps(at: DemoLayout, location: dict[str, Metrics], times: dict, plan: DemoPlanLike, learned: str) -> list[str]:
    """What to try next, from this run's numbers and times."""
    out = []
    lecl, random, ceiling = (macro(location[a]) for a in ("lecl", "random", "supervised"))
    pretrain = times.get("pretrain")
    minutes = f" (LECL took {pretrain.seconds / 60:.1f} min here)" if pretrain and pretrain.status == "ran" else ""
    if lecl is not None and ceiling is not None and ceiling["value"] > lecl["value"]:
        out.append(f"Close the gap between LECL ({lecl['value']:.3f}) and the supervised ceiling "
                   f"({ceiling['value']:.3f}): pretrain LECL longer, `clearct demo --out <new folder> "
                   f"--pretrain-epochs {2 * plan.pretrain.epochs}`{minutes}; how LECL grows with its budget is "
                   "charted in `docs/pretraining.md` and `docs/benchmark.md`.")
    if lecl is not None and random is not None and lecl["ci_low"] <= random["ci_high"]:
        out.append("LECL's interval overlaps random init's: a larger training cohort (`--patients`) narrows both "
                   "intervals; more pretraining moves LECL.")
    out.append(f"Look at what {ARM_TITLES[learned]} gets wrong: the viewers of its most confident errors, and its "
               "heatmaps in the scan viewers (section on attention).")
    out.append("Run the same commands on your own DICOM scans with a labels table (and lesion boxes for LECL or the "
               "supervised encoder): `docs/getting-started.md`, section 2; on a GPU, `clearct demo --size full`.")
    out.append("Re-run into the same folder after changing a setting: only the stages whose settings or inputs "
               "changed run again.")
    return out


def _times_section(report: Report, times: dict) -> None:
    total = sum(t.seconds for t in times.values())
    cpu = sum(t.cpu_seconds for t in times.values())
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    reused = [k for k, v in times.items() if v.status == "reused"]
    section = report.add(
        "Stage times",
        f"{total:.0f} s wall ({total / 60:.1f} min) and {cpu:.0f} s CPU in all, on {os.cpu_count()} CPU core(s); "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) when the report was written. "
        "CPU time counts this process and its finished worker processes; a wall time far above CPU time / cores "
        "means other jobs shared the machine."
        + (f" {len(reused)} stage(s) were reused from an earlier run into this folder (their times are from then)."
           if reused else ""))
    section.tables.append(Table(["stage", "wall (s)", "CPU (s)", "status"],
                                [[k, f"{v.seconds:.1f}", f"{v.cpu_seconds:.1f}", v.status] for k, v in times.items()]
                                + [["total", f"{total:.1f}", f"{cpu:.1f}", ""]]))


def _artefacts(learned: str) -> Table:
    entries = [
        ("cohort/", "training cohort: scans/, scans.csv, labels.csv, lesions.csv, config.yaml, synth.log"),
        ("external/", "external cohort (seed + 1, external acquisition preset, always DICOM), same files"),
        ("encoders/lecl/, encoders/supervised/", "pretraining runs: encoder.safetensors + encoder.json (the frozen "
         "encoder), checkpoint.pt, pretrain-log.csv, compute.json; slice-cache/ is shared"),
        ("features/<arm>/{cohort,external}/", "one <scan_id>.h5 per scan (slice × window embeddings) for each arm: "
         "lecl, random, supervised, control (the LECL features with the annotated key slices marked)"),
        ("location/<arm>/crossval/", "lesion location: splits.json, fold-*/model.*, predictions.csv, metrics.csv "
         "(AUROC, AUPRC, F1, accuracy, ECE, Brier), plots/ (ROC + PR with bootstrap bands, reliability diagrams), "
         "errors.csv + errors/ (viewers of the most confident errors), summary.json"),
        ("location/<arm>/deploy/", "the fold ensemble on the external cohort: the same files"),
        ("lung/<arm>/crossval/, lung/<arm>/deploy/", "lung abnormalities (lung window), without error viewers"),
        ("attention/<arm>/", "attention.csv (every external scan), heatmaps/<scan_id>.h5 (the encoder arms), "
         f"figures/ and viewers/ ({ARM_TITLES[learned]} and the positive control)"),
        ("predict/", "prediction.json, attention.csv/.png, heatmaps/, viewer.html, dicom/ (SR, KOS, Parametric Maps)"),
        ("figures/", "the report's own figures"),
        ("report.md, report.html", "this report"),
        ("demo-times.json, demo.log, config.yaml", "stage times, the demo's log and its resolved configuration; "
         "every stage folder holds a step.json (its settings, for resuming)"),
    ]
    return Table(["path (under the demo folder)", "what"], [[f"`{p}`", w] for p, w in entries])


def build_demo_report(at: DemoLayout, cfg: DemoConfig, plan: DemoPlanLike, times: dict) -> Report:
    """Draw the figures into the demo's ``figures/`` and assemble the report from the stages' outputs. ``cfg`` is
    the demo's config, ``plan`` its resolved settings (:class:`clearct.workflows.demo.DemoPlan`), ``times`` the
    stage results of this invocation."""
    targets = list(LOCATIONS)
    pretrain, synth = plan.pretrain, plan.synth
    learned = learned_arm(at)
    title = ARM_TITLES[learned]
    location, lung = arm_metrics(at, "location"), arm_metrics(at, "lung")
    hits = {arm: attention_hits(at.attention(arm) / "attention.csv", at.deploy("location", arm) / "predictions.csv",
                                at.external / "lesions.csv")
            for arm in (*DEMO_ARMS, CONTROL) if (at.attention(arm) / "attention.csv").is_file()
            and (at.deploy("location", arm) / "predictions.csv").is_file()}
    pointing: dict[str, HeatmapPointing] = {
        arm: heatmap_pointing(at.attention(arm) / "heatmaps", at.external / "lesions.csv")
        for arm in DEMO_ARMS if (at.attention(arm) / "heatmaps").is_dir()}
    cohorts, prevalence = cohort_rows(at, targets)
    n_train, n_ext = (len(read_labels_table(c / "labels.csv").ids) for c in (at.cohort, at.external))
    report = Report("clearct demo report")

    wall = sum(t.seconds for t in times.values())
    cpu = sum(t.cpu_seconds for t in times.values())
    reused = [k for k, t in times.items() if t.status == "reused"]
    best = macro(location[learned])
    summary = report.add(
        "Summary",
        f"**What ran.** `clearct demo --size {cfg.size}` (seed {cfg.seed}) synthesised {n_train} training "
        f"({_synth_settings(at.cohort)['format']}) and {n_ext} external ({_synth_settings(at.external)['format']}; "
        f"another scanner preset) phantom CT scans of {synth.slices} slices × {synth.size} × {synth.size} pixels, "
        f"pretrained the slice encoder `{pretrain.arch}` at "
        f"{pretrain.image_size or '?'} px on the training scans in two ways — LECL (self-supervised, with the lesion "
        f"boxes; {_steps(at, 'lecl') or '?'} steps) and the supervised ceiling (per-slice lesion labels; "
        f"{_steps(at, 'supervised') or '?'} steps) — and compared four arms with the same attention-MIL: ABMIL "
        f"cross-validated ({plan.crossval.folds} folds) on the training cohort, then the fold ensemble on the external "
        f"cohort, for the location of lesions ({len(targets)} locations) and for lung abnormalities "
        f"({len(LUNG_FINDINGS)} findings). It took {wall / 60:.1f} min wall and {cpu / 60:.1f} min CPU on "
        f"{os.cpu_count()} core(s)" + (f", {len(reused)} of {len(times)} stages reused from an earlier run into this "
                                       "folder (their times are from then)" if reused else "")
        + " (stage times at the end).",
        f"**What came out.** On lesion location, {title} learned most: macro AUROC {fmt_ci(best)} cross-validated and "
        f"{fmt_ci(macro(location[learned], 'deploy'))} on the external cohort. "
        + compare_sentence(location, "lecl", "random") + " " + ordering_sentence(location, [*DEMO_ARMS, CONTROL]),
    )
    if learned in pointing:
        summary.paragraphs.append(
            pointing_sentence(pointing[learned], location[learned], targets, f"Where {title} looks",
                              pointing.get("random") if learned != "random" else None, ARM_TITLES["random"]))
    summary.paragraphs.append("**What it means.** " + " ".join(_meaning(location, learned, synth)))

    section = report.add("Cohorts", "Both cohorts are clearct synth phantoms (chest-abdomen-pelvis range); the "
                         "external one uses another seed (other patients) and the `external` acquisition preset "
                         "(more noise, sharp kernel, thicker slices, +8 HU offset) — external validation in miniature.")
    section.tables.append(cohorts)
    example = _example_figure(at)
    if example:
        section.figures.append(example)

    section = report.add("Pretraining", f"LECL: {_training_line(at, 'lecl')}",
                         "Supervised ceiling (per-slice binary cross-entropy on the lesion locations, every slice a "
                         f"lesion covers is a positive): {_training_line(at, 'supervised')}",
                         f"Random init: `{pretrain.arch}` as built, never trained (the registry's seeded "
                         "initialisation).")
    panels = [(name, *read_loss_log(log)) for name, log in (
        (f"LECL loss (symmetric, λ = {pretrain.lam:g})", at.encoder("lecl") / "pretrain-log.csv"),
        ("supervised ceiling: BCE", at.encoder("supervised") / "pretrain-log.csv")) if log.is_file()]
    if panels:
        path = loss_curve_figure(at.figures / "pretrain-loss.png", panels)
        section.figures.append(Figure(_rel(at, path), "Training loss per logged step."))

    section = report.add("Lesion location: the arms compared",
                         "Multi-label ABMIL on the frozen slice embeddings of both windows (one instance per slice and "
                         "window), the same settings for every arm. Macro = the mean over the locations.")
    section.tables.append(comparison_table(location, targets))
    section.paragraphs += [" ".join([compare_sentence(location, "lecl", "random"),
                                     compare_sentence(location, "lecl", "random", "deploy"),
                                     ordering_sentence(location, [*DEMO_ARMS, CONTROL])]),
                           "Locations learned beyond chance (95% interval of the CV AUROC above 0.5) — "
                           + " ".join(chance_sentence(location[a], targets, ARM_TITLES[a])
                                      for a in (*DEMO_ARMS, CONTROL)),
                           _control_sentence(location)]

    section = report.add(f"Lesion location: {title}, per location",
                         f"{title} is the arm this report looks at from here on (the highest macro CV AUROC): its "
                         "models and encoder made the heatmaps, the scan viewers, the prediction and the DICOM objects "
                         "below.")
    section.tables.append(auroc_table(location[learned], targets, prevalence))
    curves = [(name, c) for name, c in (
        (f"{title}, cross-validation", read_predictions(at.crossval("location", learned) / "predictions.csv", "cv")),
        (f"{title}, external cohort", read_predictions(at.deploy("location", learned) / "predictions.csv", "deploy")),
        *([("LECL, cross-validation", read_predictions(at.crossval("location", "lecl") / "predictions.csv", "cv"))]
          if learned != "lecl" else []),
        ("positive control, CV", read_predictions(at.crossval("location", CONTROL) / "predictions.csv", "cv")))
        if c]
    if curves:
        path = roc_overview_figure(at.figures / "roc.png", curves)
        section.figures.append(Figure(_rel(at, path), "ROC curves per lesion location; per-location plots with "
                                      "bootstrap bands lie in location/<arm>/{crossval,deploy}/plots/."))

    _calibration_section(report, at, learned, location[learned], targets)

    section = report.add("Lung abnormalities: the arms compared",
                         "Multi-label ABMIL on the lung-window instances of the same feature files (clearct synth's "
                         "lung findings), cross-validated and deployed on the external cohort.")
    section.tables.append(comparison_table(lung, list(LUNG_FINDINGS)))
    section.paragraphs.append(compare_sentence(lung, "lecl", "random"))

    _look_section(report, at, learned, location, hits, pointing, targets)
    _predict_section(report, at, learned)
    _errors_section(report, at, learned)
    report.add("What to try next", *_next_steps(at, location, times, plan, learned))
    _times_section(report, times)
    section = report.add("Where everything lies", f"All paths are under `{at.root}`.")
    section.tables.append(_artefacts(learned))
    return report


def _meaning(location: dict[str, Metrics], learned: str, synth: SynthSettings) -> list[str]:
    out = []
    lecl, random, ceiling, control = (macro(location[a]) for a in ("lecl", "random", "supervised", CONTROL))
    if lecl is not None and random is not None:
        if lecl["ci_low"] > random["ci_high"]:
            gap = f", {ceiling['value'] - lecl['value']:.2f} below the supervised ceiling" if ceiling else ""
            out.append(f"LECL's pretraining put some of the lesions into the slice embeddings that random weights do "
                       f"not carry (+{lecl['value'] - random['value']:.3f} macro AUROC{gap}).")
        else:
            out.append("At this budget LECL's pretraining gave ABMIL no more than random weights do.")
    if learned == "supervised":
        out.append("The supervised ceiling is trained on the lesion labels of the same training scans that ABMIL "
                   "then cross-validates, so its CV figures are optimistic by construction; its external figures, on "
                   "scans it never saw, are the fairer ones.")
    if control is not None:
        out.append(f"The positive control (the LECL features with the key slices marked) reaches {control['value']:.3f}:"
                   " ABMIL finds lesion slices once the embeddings set them apart, so what separates the arms is the "
                   "encoder.")
    out.append(f"The phantom lesions are larger and brighter than clearct synth's defaults (`--lesion-contrast "
               f"{synth.lesion_contrast:g}`, `--lesion-size-mm {synth.lesion_size_mm[0]:g},"
               f"{synth.lesion_size_mm[1]:g}`): these numbers show the pipeline at work, they say nothing about "
               "real CT.")
    return out


def _control_sentence(location: dict[str, Metrics]) -> str:
    control = macro(location[CONTROL])
    if control is None:
        return ""
    return ("Positive control: the same LECL features with the key-slice rows of every annotated lesion moved along "
            "a direction of its location (one standard deviation per feature, root-mean-square), the same ABMIL: "
            f"macro CV AUROC {fmt_ci(control)}. Training scans whose lesions are not annotated carry no marks, so "
            "the CV control stays below 1.")


def _calibration_section(report: Report, at: DemoLayout, learned: str, metrics: Metrics, targets: list[str]) -> None:
    title = ARM_TITLES[learned]
    section = report.add(f"Calibration of {title}'s probabilities",
                         "Does a score of 0.8 mean that about 80 % of such scans have the lesion? ECE and Brier score "
                         "per location, and the reliability diagrams (`docs/interpret.md`, Calibration).",
                         calibration_sentence(metrics, title))
    section.tables.append(calibration_table(at, learned, metrics, targets))
    worst = worst_calibrated(metrics, targets)
    if worst is None:
        return
    ece = metrics[("cv", worst, "ece")]
    for set_name, folder, where in (("cv", at.crossval("location", learned), "cross-validated"),
                                    ("deploy", at.deploy("location", learned), "external cohort")):
        path = reliability_plot(folder, set_name, worst)
        if path.is_file():
            section.figures.append(Figure(_rel(at, path), f"Reliability diagram of {worst}, {where}: the location "
                                          f"whose CV probabilities are furthest off (CV ECE {ece['value']:.3f}); "
                                          "the diagonal is perfect calibration, the lower panel counts the scans per "
                                          "bin."))


def _method_words(at: DemoLayout, arm: str) -> str:
    """How the arm's heatmaps were computed, as a clause for the report (from its first heatmap file)."""
    first = next(iter(sorted((at.attention(arm) / "heatmaps").glob("*.h5"))), None)
    if first is None:
        return ""
    h = read_heatmaps(first)
    how = {"gradient-input": "gradient × input: the gradient of the location's logit with respect to the encoder's "
                             "input pixels times those pixels, at the slice's own resolution",
           "gradcam": f"Grad-CAM on the encoder's last spatial map, {h.layer}, on its coarse grid"}
    return f" ({how.get(h.method, f'{h.title} at {h.layer}')})"


def _look_section(report: Report, at: DemoLayout, learned: str, location: dict[str, Metrics],
                  hits: dict, pointing: dict[str, HeatmapPointing], targets: list[str]) -> None:
    title = ARM_TITLES[learned]
    section: Section = report.add(
        "Where the models look: attention and heatmaps",
        "`clearct attention` ran every arm's location models over the external scans: the attention weights say which "
        "slices a scan's scores rest on; for the encoder arms, heatmaps of every location over each scan's top "
        f"attended slices say where inside a slice{_method_words(at, learned)} (`docs/interpret.md`). The pointing "
        "game counts, over the top attended slices that lie on a lesion, how often the map of the lesion's own "
        "location peaks in its box.")
    section.tables.append(pointing_table(
        {arm: pointing.get(arm) for arm in (*DEMO_ARMS, CONTROL) if arm in pointing or arm in hits}, location,
        {arm: (h.hits, h.scans) for arm, h in hits.items()}))
    if learned in pointing:
        section.paragraphs.append(pointing_sentence(pointing[learned], location[learned], targets, title,
                                                    pointing.get("random") if learned != "random" else None,
                                                    ARM_TITLES["random"]))
        section.tables.append(pointing_by_location(pointing[learned], location[learned], targets))
    for arm in dict.fromkeys((learned, "random")):
        figure = _pointing_figure(at, arm)
        if figure is not None:
            section.figures.append(figure)
    drawn = [p.stem for p in sorted((at.attention(learned) / "figures").glob("*.png"))]
    section.figures += _overlay_figures(at, at.attention(learned) / "heatmaps", drawn,
                                        _deploy_scores(at.deploy("location", learned) / "predictions.csv"),
                                        f"{title} on the external cohort")
    section.figures += _attention_figures(at, learned)
    viewers = _viewer_links(at, at.attention(learned) / "viewers")
    if viewers:
        section.paragraphs.append(f"Scroll these scans with the attention, heatmaps, lesion boxes and scores of {title}: "
                                  + ", ".join(viewers) + ".")
    control = _attention_figures(at, CONTROL)
    if control:
        section = report.add("Attention over slices: positive control",
                             "The positive control's models on the same external scans, their key slices marked as "
                             "in training: where attention goes when the slice embeddings do carry the lesions.")
        section.figures += control
        viewers = _viewer_links(at, at.attention(CONTROL) / "viewers")
        if viewers:
            section.paragraphs.append("Viewers: " + ", ".join(viewers) + ".")

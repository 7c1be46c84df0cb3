"""The numbers of a demo folder and the tables and sentences made from them: metrics with their intervals, the arm
that learned, how two arms' intervals relate, calibration, the pointing game. Every sentence here is built from
the values it quotes, so the report says nothing its tables do not show."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from clearct.evaluate.localization import HeatmapPointing, Pointing
from clearct.report.document import Table
from clearct.report.layouts import ARM_TITLES, DEMO_ARMS, DEMO_TASKS, DemoLayout

Metric = dict[str, float]  # value, ci_low, ci_high, fold_mean, fold_sd, n
Metrics = dict[tuple[str, str, str], Metric]  # (set, target, metric) → Metric


def read_metrics(path: Path) -> Metrics:
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


def arm_metrics(at: DemoLayout, task: str) -> dict[str, Metrics]:
    """Per arm of ``task``: its crossval metrics (set ``cv``) and deploy metrics (set ``deploy``) in one dict."""
    return {arm: read_metrics(at.crossval(task, arm) / "metrics.csv") | read_metrics(at.deploy(task, arm) / "metrics.csv")
            for arm in DEMO_TASKS[task]}


def macro(metrics: Metrics, set_name: str = "cv", metric: str = "auroc") -> Metric | None:
    m = metrics.get((set_name, "macro", metric))
    return m if m is not None and np.isfinite(m["value"]) else None


def learned_arm(at: DemoLayout) -> str:
    """The encoder arm whose lesion-location models learned most: the highest macro CV AUROC (the first of
    ``DEMO_ARMS`` on a tie, LECL when no arm has metrics) — the one the demo looks at with predict and heatmaps."""
    scores = {arm: m["value"] for arm in DEMO_ARMS
              if (m := macro(read_metrics(at.crossval("location", arm) / "metrics.csv"))) is not None}
    return max(scores, key=scores.__getitem__) if scores else DEMO_ARMS[0]


def fmt_ci(m: Metric | None, digits: int = 3) -> str:
    if m is None or not np.isfinite(m["value"]):
        return "–"
    if not np.isfinite(m["ci_low"]):
        return f"{m['value']:.{digits}f}"
    return f"{m['value']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"


def fmt_sd(m: Metric | None) -> str:
    if m is None or not np.isfinite(m["fold_mean"]):
        return "–"
    sd = f" ± {m['fold_sd']:.3f}" if np.isfinite(m["fold_sd"]) else ""
    return f"{m['fold_mean']:.3f}{sd}"


def fmt_pointing(p: Pointing) -> str:
    return f"{p.share:.2f} ({p.hits}/{p.slices})" if p.slices else "– (no top slice on a lesion)"


def interval_relation(a: Metric, b: Metric) -> str:
    """``above`` / ``below`` when the 95% intervals of ``a`` and ``b`` do not overlap, else ``overlap``."""
    if a["ci_low"] > b["ci_high"]:
        return "above"
    if a["ci_high"] < b["ci_low"]:
        return "below"
    return "overlap"


def compare_sentence(metrics: dict[str, Metrics], arm: str, other: str, set_name: str = "cv") -> str:
    """Whether ``arm`` lies above ``other`` with non-overlapping 95% intervals of the macro AUROC of ``set_name``."""
    a, b = macro(metrics[arm], set_name), macro(metrics[other], set_name)
    where = "cross-validated" if set_name == "cv" else "on the external cohort"
    if a is None or b is None:
        return f"{ARM_TITLES[arm]} and {ARM_TITLES[other]} cannot be compared {where}: a macro AUROC is missing."
    numbers = f"macro AUROC {fmt_ci(a)} against {fmt_ci(b)}"
    relation = interval_relation(a, b)
    if relation == "overlap":
        return (f"{where.capitalize()}, {ARM_TITLES[arm]} is not separated from {ARM_TITLES[other]}: their 95% "
                f"intervals overlap ({numbers}).")
    return (f"{where.capitalize()}, {ARM_TITLES[arm]} is {relation} {ARM_TITLES[other]} with non-overlapping 95% "
            f"intervals ({numbers}).")


def ordering_sentence(metrics: dict[str, Metrics], arms: list[str]) -> str:
    """The arms ordered by macro CV AUROC, and which neighbours' intervals overlap."""
    values = {a: m for a in arms if (m := macro(metrics[a])) is not None}
    ranked = sorted(values, key=lambda a: -values[a]["value"])
    if len(ranked) < 2:
        return ""
    order = " > ".join(f"{ARM_TITLES[a]} {values[a]['value']:.3f}" for a in ranked)
    ties = [f"{ARM_TITLES[a]} and {ARM_TITLES[b]}" for a, b in zip(ranked, ranked[1:])
            if interval_relation(values[a], values[b]) == "overlap"]
    return (f"Ordered by macro CV AUROC: {order}; "
            + (f"neighbours whose 95% intervals overlap: {'; '.join(ties)}." if ties
               else "no two neighbours' 95% intervals overlap."))


def above_chance(metrics: Metrics, set_name: str, targets: list[str]) -> list[str]:
    """The targets whose AUROC interval of ``set_name`` lies above 0.5."""
    return [t for t in targets if (m := metrics.get((set_name, t, "auroc"))) and m["ci_low"] > 0.5]


def chance_sentence(metrics: Metrics, targets: list[str], title: str) -> str:
    """How many targets an arm learned beyond chance (95% interval of the AUROC above 0.5), cross-validated and
    on the external cohort."""
    above = above_chance(metrics, "cv", targets)
    if not above:
        return f"{title}: none."
    external = [t for t in above if t in above_chance(metrics, "deploy", targets)]
    return (f"{title}: {len(above)} of {len(targets)} ({', '.join(above)}), on the external cohort "
            f"{len(external) or 'none'} of them.")


def comparison_table(arm_metrics: dict[str, Metrics], targets: list[str]) -> Table:
    """Rows = arms: macro CV AUROC [CI], macro external AUROC [CI], then the CV AUROC of every target."""
    rows = []
    for arm, metrics in arm_metrics.items():
        cells = [f"{m['value']:.2f}" if (m := metrics.get(("cv", t, "auroc"))) and np.isfinite(m["value"]) else "–"
                 for t in targets]
        rows.append([ARM_TITLES[arm], fmt_ci(macro(metrics)), fmt_ci(macro(metrics, "deploy")), *cells])
    return Table(["encoder", "macro CV AUROC [95% CI]", "macro external AUROC [95% CI]", *targets], rows,
                 "pooled out-of-fold predictions (CV) and the fold ensemble on the external cohort; CIs from "
                 "patient-level bootstrap resamples; per-target columns: CV AUROC")


def auroc_table(metrics: Metrics, targets: list[str], prevalence: dict[str, tuple[float, float]]) -> Table:
    """Per target of one arm: prevalence in both cohorts, pooled CV AUROC with CI, fold mean ± sd, CV AUPRC,
    external AUROC with CI."""
    rows = []
    for t in [*targets, "macro"]:
        prev = prevalence.get(t)
        rows.append([t, f"{prev[0]:.2f} / {prev[1]:.2f}" if prev else "",
                     fmt_ci(metrics.get(("cv", t, "auroc"))), fmt_sd(metrics.get(("cv", t, "auroc"))),
                     fmt_ci(metrics.get(("cv", t, "auprc"))), fmt_ci(metrics.get(("deploy", t, "auroc")))])
    return Table(["target", "prevalence (cohort / external)", "CV AUROC [95% CI]", "CV AUROC fold mean ± sd",
                  "CV AUPRC [95% CI]", "external AUROC [95% CI]"], rows,
                 "pooled out-of-fold predictions; CIs from patient-level bootstrap resamples")


def reliability_plot(folder: Path, set_name: str, target: str) -> Path:
    """The reliability diagram crossval and deploy draw per set and target."""
    return folder / "plots" / f"{set_name}-{target}-reliability.png"


def calibration_table(at: DemoLayout, arm: str, metrics: Metrics, targets: list[str]) -> Table:
    """Per target of one arm's location models: ECE and Brier score with CIs, CV and external, and links to the
    reliability diagrams (paths relative to the demo folder)."""
    folders = {"cv": at.crossval("location", arm), "deploy": at.deploy("location", arm)}
    rows = []
    for t in [*targets, "macro"]:
        links = [f"[{'CV' if s == 'cv' else 'external'}]({p.relative_to(at.root).as_posix()})"
                 for s, folder in folders.items() if (p := reliability_plot(folder, s, t)).is_file()]
        rows.append([t, *[fmt_ci(metrics.get((s, t, m))) for m in ("ece", "brier") for s in ("cv", "deploy")],
                     " ".join(links)])
    return Table(["target", "CV ECE [95% CI]", "external ECE [95% CI]", "CV Brier [95% CI]",
                  "external Brier [95% CI]", "reliability diagrams"], rows,
                 "ECE: 10 equal-width bins, the gap between the fraction of positives and the mean probability, "
                 "weighted by the bin's share (0 = calibrated); Brier: mean squared difference of probability and "
                 "label; patient-level bootstrap CIs")


def calibration_sentence(metrics: Metrics, title: str) -> str:
    """The macro ECE and Brier score of one arm, CV and external, read as points of probability."""
    parts = []
    for set_name, where in (("cv", "cross-validated"), ("deploy", "on the external cohort")):
        ece, brier = macro(metrics, set_name, "ece"), macro(metrics, set_name, "brier")
        if ece is not None and brier is not None:
            parts.append(f"{where} macro ECE {fmt_ci(ece)} (the probabilities are off by about "
                         f"{100 * ece['value']:.0f} points on average) and Brier score {fmt_ci(brier)}")
    if not parts:
        return f"{title}: no calibration metrics were written."
    return f"{title}: " + "; ".join(parts) + "."


def worst_calibrated(metrics: Metrics, targets: list[str]) -> str | None:
    """The target with the highest CV ECE (where the probabilities are furthest off), None without ECE rows."""
    eces = {t: m["value"] for t in targets if (m := metrics.get(("cv", t, "ece"))) and np.isfinite(m["value"])}
    return max(eces, key=eces.__getitem__) if eces else None


def pointing_table(pointing: dict[str, HeatmapPointing | None], metrics: dict[str, Metrics],
                   hits: dict[str, tuple[int, int]]) -> Table:
    """Per arm: macro CV AUROC, the attention hit share and, where it has heatmaps, the pointing game."""
    rows = []
    for arm, p in pointing.items():
        h = hits.get(arm)
        rows.append([ARM_TITLES[arm], fmt_ci(macro(metrics[arm])),
                     f"{h[0] / h[1]:.2f} ({h[0]}/{h[1]})" if h and h[1] else "–",
                     *([str(p.scans), f"{p.total.slices}/{p.instances}", fmt_pointing(p.total)] if p is not None
                       else ["–", "–", "– (no heatmaps)"])])
    return Table(["encoder", "macro CV AUROC [95% CI]", "attention hit share (positive external scans)",
                  "external scans with lesions", "top slices on a lesion", "pointing game"], rows,
                 "attention hit share: the most attended slice lies within ±1 slice of a lesion of the most strongly "
                 "predicted location; pointing game: the heatmap's peak, for the lesion's own location, lies in the "
                 "lesion box grown by half its size, over the top attended slices that lie on a lesion")


def pointing_by_location(p: HeatmapPointing, metrics: Metrics, targets: list[str]) -> Table:
    rows = [[t, fmt_ci(metrics.get(("cv", t, "auroc"))), fmt_ci(metrics.get(("deploy", t, "auroc"))),
             fmt_pointing(p.by_target.get(t, Pointing(0, 0)))] for t in targets]
    return Table(["location", "CV AUROC [95% CI]", "external AUROC [95% CI]", "pointing game (hits / top slices "
                  "on a lesion of this location)"], rows)


def pointing_sentence(p: HeatmapPointing, metrics: Metrics, targets: list[str], title: str,
                      floor: HeatmapPointing | None, floor_title: str, good: float = 0.8) -> str:
    """The pointing game of an arm in all and over the locations its models rank well (CV AUROC ≥ ``good``),
    beside the floor arm's."""
    total = p.total
    text = (f"{title}: over the {total.slices} top attended slices that lie on a lesion, the heatmap's peak falls "
            f"in the lesion box (grown by half) for {fmt_pointing(total)}")
    strong = [t for t in targets if (m := metrics.get(("cv", t, "auroc"))) and m["value"] >= good]
    if strong:
        sub = Pointing(sum(p.by_target[t].hits for t in strong if t in p.by_target),
                       sum(p.by_target[t].slices for t in strong if t in p.by_target))
        text += (f"; over the locations with a CV AUROC ≥ {good:g} ({', '.join(strong)}) for {fmt_pointing(sub)}")
    else:
        text += f"; no location has a CV AUROC ≥ {good:g}"
    if floor is not None:
        text += f". {floor_title}, the floor: {fmt_pointing(floor.total)}"
    return text + "."

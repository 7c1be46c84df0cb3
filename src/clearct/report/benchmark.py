"""Renders the benchmark: tables shaped like the paper's Tables 2–4, the λ-ablation plot and a report, from the
results :mod:`clearct.workflows.benchmark` collected from its task folders.

Cells are AUROC ``mean ± sd``: for cross-validated sets the mean and sd over the folds (the paper's form); for
a held-out or external set, predicted once by the fold ensemble, the ensemble's AUROC ± its patient-bootstrap sd.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from clearct.common.atomic import atomic_write_text
from clearct.config import (
    BenchmarkConfig,
    CrossvalSettings,
    Finetune3dSettings,
    PretrainSettings,
    SynthSettings,
)
from clearct.evaluate.curves import draw_curves
from clearct.evaluate.efficiency import cost_table
from clearct.evaluate.plots import plt, save_figure
from clearct.evaluate.tables import write_csv
from clearct.report.document import Figure, Report, Table, to_markdown, write_report
from clearct.synth.labels import LOCATIONS, LUNG_FINDINGS


class BenchmarkPlanLike(Protocol):
    """What the report reads of a :class:`clearct.workflows.benchmark.BenchmarkPlan` (report sits below
    workflows, so it names the plan by its fields)."""

    @property
    def cfg(self) -> BenchmarkConfig: ...
    @property
    def synth(self) -> SynthSettings: ...
    @property
    def pretrain(self) -> PretrainSettings: ...
    @property
    def crossval(self) -> CrossvalSettings: ...
    @property
    def finetune3d(self) -> Finetune3dSettings: ...
    @property
    def image_size(self) -> int: ...


@dataclass(frozen=True)
class ResultSet:
    key: str  # results.json key, e.g. "location/holdout"
    title: str
    task: str  # task folder under tasks/<encoder>/
    set_name: str  # "cv", "holdout" or "deploy" in metrics.csv
    targets: tuple[str, ...]
    folds: bool  # True: mean ± sd over folds; False: ensemble value ± bootstrap sd


RESULT_SETS = (
    ResultSet("location/holdout", "Table 2 — lesion location, held-out test set (both windows)", "location",
              "holdout", LOCATIONS, False),
    ResultSet("location/cv", "Table 2b — lesion location, cross-validation", "location", "cv", LOCATIONS, True),
    ResultSet("lung/cv", "Table 3a — lung abnormalities, internal cross-validation (lung window)", "lung", "cv",
              LUNG_FINDINGS, True),
    ResultSet("lung/external", "Table 3b — lung abnormalities, external cohort (other scanner), fold ensemble",
              "lung-external", "deploy", LUNG_FINDINGS, False),
    ResultSet("stage/cv", "Table 4 — stage (high vs low), nested cross-validation (lung window)", "stage", "cv",
              ("stage_high",), True),
)


# The paired comparisons (a − b, macro AUROC on the same patients): the paper's ordering LECL ≥ MoCo > random init
BEST_LECL = "best LECL"  # the LECL-λ with the highest pooled macro AUROC in the result set
PAIRS = (("lecl-1", "moco"), ("lecl-0", "moco"), (BEST_LECL, "moco"), ("moco", "random"), ("lecl-1", "random"))
# the result sets the summary sentences speak about (the paired table has every set)
PAPER_SETS = ("location/cv", "location/holdout", "lung/cv", "lung/external")


def _fmt(cell: dict | None) -> str:
    if cell is None or not math.isfinite(cell["mean"]):
        return "–"
    return f"{cell['mean']:.3f} ± {cell['sd']:.3f}" if math.isfinite(cell["sd"]) else f"{cell['mean']:.3f}"


def paper_tables(results: dict[str, dict[str, dict]]) -> list[tuple[ResultSet, Table]]:
    """One table per result set: rows = encoders, columns = classes + average, cells AUROC mean ± sd."""
    tables = []
    for rs in RESULT_SETS:
        if rs.key not in results:
            continue
        cols = list(rs.targets) if len(rs.targets) > 1 else []
        header = ["encoder", *cols, "average AUROC" if cols else "AUROC", "pooled AUROC [95% CI]"]
        rows = []
        for enc, cells in results[rs.key].items():
            m = cells["macro"]
            rows.append([enc, *(_fmt(cells.get(t)) for t in cols), _fmt(m),
                         f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"])
        caption = ("mean ± sd over folds" if rs.folds else "fold-ensemble AUROC ± patient-bootstrap sd") + \
            "; last column: all predictions pooled, 95 % patient-bootstrap CI"
        tables.append((rs, Table(header, rows, caption)))
    return tables


def lecl_lambda(name: str) -> float | None:
    """λ of a benchmark encoder named ``lecl-<λ>``; None for the others."""
    prefix, _, lam = name.partition("-")
    return float(lam) if prefix == "lecl" and lam else None


def lambda_points(results: dict[str, dict[str, dict]], key: str) -> tuple[list[float], list[float], list[float]]:
    """(λ, mean, sd) of the macro AUROC of the LECL-λ encoders in a result set, sorted by λ."""
    pts = []
    for enc, cells in results.get(key, {}).items():
        lam = lecl_lambda(enc)
        if lam is not None:
            pts.append((lam, cells["macro"]["mean"], cells["macro"]["sd"]))
    pts.sort()
    return [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]


def lambda_figure(results: dict[str, dict[str, dict]], stem: Path) -> list[Path]:
    """The λ ablation: macro AUROC vs λ per result set, MoCo (dashed) and random init (dotted) as references."""
    keys = [rs for rs in RESULT_SETS if rs.key in results]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.6 * max(1, len(keys)), 3.4), squeeze=False)
    for ax, rs in zip(axes[0], keys):
        lam, mean, sd = lambda_points(results, rs.key)
        if lam:
            ax.errorbar(lam, mean, yerr=sd, marker="o", capsize=3, color="C0", label="LECL-λ")
        for enc, style, color in (("moco", "--", "C1"), ("random", ":", "C7")):
            cell = results[rs.key].get(enc, {}).get("macro")
            if cell is not None and math.isfinite(cell["mean"]):
                ax.axhline(cell["mean"], ls=style, color=color, label="MoCo" if enc == "moco" else "random init")
                if math.isfinite(cell["sd"]) and enc == "moco":
                    ax.axhspan(cell["mean"] - cell["sd"], cell["mean"] + cell["sd"], color=color, alpha=0.12)
        ax.set_title(rs.key, fontsize=10)
        ax.set_xlabel("λ")
        ax.set_xticks(lam or [0])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("macro AUROC")
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, stem)


def comparison_rows(results: dict[str, dict[str, dict]]) -> list[list[str]]:
    """Per result set: MoCo − random, best LECL − MoCo, LECL-1 − MoCo and the supervised ceiling − best LECL
    (macro AUROC), for the honest summary."""
    rows = []
    for rs in RESULT_SETS:
        cells = results.get(rs.key)
        if not cells:
            continue
        mean = {enc: c["macro"]["mean"] for enc, c in cells.items()}
        lam, means, _ = lambda_points(results, rs.key)
        best = max(range(len(lam)), key=lambda i: means[i]) if lam else None
        moco = mean.get("moco", math.nan)
        rows.append([rs.key, f"{moco - mean.get('random', math.nan):+.3f}",
                     f"{means[best] - moco:+.3f} (λ = {lam[best]:g})" if best is not None else "–",
                     f"{mean.get('lecl-1', math.nan) - moco:+.3f}",
                     f"{mean.get('supervised', math.nan) - means[best]:+.3f}" if best is not None else "–",
                     max(mean, key=lambda e: mean[e] if math.isfinite(mean[e]) else -1.0)])
    return rows


def encoder_label(name: str) -> str:
    """``lecl-1`` → LECL-1, ``moco`` → MoCo, ``random`` → random init; others as they are."""
    lam = lecl_lambda(name)
    if lam is not None:
        return f"LECL-{lam:g}"
    return {"moco": "MoCo", "random": "random init", "supervised": "supervised ceiling"}.get(name, name)


def _signed(d: dict) -> str:
    return f"{d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def _side(d: dict) -> int:
    """+1 when the CI of a difference lies above 0, −1 below, 0 when it contains 0 (or is undefined)."""
    return 1 if d["ci_low"] > 0 else -1 if d["ci_high"] < 0 else 0


def paired_table(paired: dict[str, list[dict]]) -> Table:
    """Rows = comparisons, columns = result sets, cells: difference of macro AUROC [paired 95 % CI]."""
    keys = list(paired)
    cell = {(r["pair"], k): r for k in keys for r in paired[k]}
    body = []
    for a, b in PAIRS:
        pair = f"{a} − {b}"
        if not any((pair, k) in cell for k in keys):
            continue
        row = [f"{encoder_label(a) if a != BEST_LECL else a} − {encoder_label(b)}"]
        for k in keys:
            r = cell.get((pair, k))
            best = f" ({encoder_label(r['a'])})" if r is not None and a == BEST_LECL else ""
            row.append(_signed(r) + best if r is not None else "–")
        body.append(row)
    n = {k: paired[k][0]["patients"] for k in keys}
    caption = ("difference of macro AUROC, both encoders' predictions of the same patients; 95 % CI from a paired "
               "patient bootstrap (" + ", ".join(f"{k}: {v} patients" for k, v in n.items()) + "); best LECL: the "
               "λ with the highest pooled AUROC in that set, picked on the same data")
    return Table(["comparison", *keys], body, caption)


def ordering_sentences(results: dict[str, dict[str, dict]], paired: dict[str, list[dict]]) -> list[str]:
    """Per paper result set: whether LECL ≥ MoCo holds as in the paper (the paired CI of LECL-1 − MoCo and best
    LECL − MoCo), and whether MoCo and LECL are above random init with non-overlapping CIs of their own pooled
    AUROCs (and by the paired CI)."""
    out = []
    for key in PAPER_SETS:
        rows = {r["pair"]: r for r in paired.get(key, [])}
        cells = results.get(key, {})
        parts = []
        for a in ("lecl-1", BEST_LECL):
            d = rows.get(f"{a} − moco")
            if d is None or (a == BEST_LECL and d["a"] == "lecl-1"):  # the best is LECL-1: said already
                continue
            who = encoder_label(d["a"]) if a == "lecl-1" else f"best LECL ({encoder_label(d['a'])})"
            verdict = {1: "above MoCo, as in the paper", -1: "below MoCo, against the paper",
                       0: "not separated from MoCo"}[_side(d)]
            parts.append(f"{who} − MoCo {_signed(d)}: {verdict}")
        random = cells.get("random", {}).get("macro")
        for enc in ("moco", "lecl-1", "lecl-0"):
            mine = cells.get(enc, {}).get("macro")
            if random is None or mine is None:
                continue
            apart = mine["ci_low"] > random["ci_high"]
            d = rows.get(f"{enc} − random")
            paired_part = f"; paired {_signed(d)}" if d is not None else ""
            parts.append(f"{encoder_label(enc)} {_ci(mine)} vs random init {_ci(random)}: "
                         f"{'above random init, CIs not overlapping' if apart else 'CIs overlap'}{paired_part}")
        if parts:
            out.append(f"**{key}** — " + "; ".join(parts) + ".")
    return out


def add_paired(report: Report, results: dict[str, dict[str, dict]], paired: dict[str, list[dict]]) -> None:
    """The "Paired differences" section: the table of every comparison and one verdict sentence per paper set."""
    if not paired:
        return
    section = report.add(
        "Paired differences — the paper's ordering",
        "The paper's ordering is LECL ≥ MoCo > random init. Each difference below compares two encoders on the same "
        "patients (the same folds and held-out or external patients), so what they share cancels and the CI is "
        "that of the difference itself, narrower than the two encoders' own CIs side by side. \"Not separated\": "
        "the paired CI contains 0, so LECL ≥ MoCo is neither shown nor contradicted at this size.",
        *ordering_sentences(results, paired))
    section.tables.append(paired_table(paired))


def steps_figure(rows: list[dict], stem: Path) -> list[Path]:
    """Macro AUROC of lesion location against pretraining steps (CV and held-out panels), one line with its 95 %
    CI band per encoder; step 0 is random init."""
    sets = [s for s in ("cv", "holdout") if any(r["set"] == s for r in rows)]
    fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 4), squeeze=False)
    for ax, set_name in zip(axes[0], sets):
        for i, enc in enumerate(dict.fromkeys(r["encoder"] for r in rows)):
            pts = sorted((r["steps"], r["value"], r["ci_low"], r["ci_high"]) for r in rows
                         if r["encoder"] == enc and r["set"] == set_name)
            x, v, lo, hi = (list(c) for c in zip(*pts))
            ax.plot(x, v, marker="o", color=f"C{i}", label=encoder_label(enc))
            ax.fill_between(x, lo, hi, color=f"C{i}", alpha=0.15)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set(xlabel="pretraining steps (0 = random init)", ylabel="macro AUROC",
               title=f"lesion location, {'cross-validation' if set_name == 'cv' else 'held-out test set'}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, stem)


def steps_table(rows: list[dict], set_name: str) -> Table:
    """Rows = encoders, columns = pretraining steps: macro AUROC [95 % CI] and, below it, the paired difference to
    random init."""
    mine = [r for r in rows if r["set"] == set_name]
    steps = sorted({r["steps"] for r in mine})
    cell = {(r["encoder"], r["steps"]): r for r in mine}
    body = []
    for enc in dict.fromkeys(r["encoder"] for r in mine):
        body.append([encoder_label(enc), *(_ci(cell[enc, n]) if (enc, n) in cell else "–" for n in steps)])
        body.append([f"{encoder_label(enc)} − random init",
                     *(_signed(cell[enc, n]["vs_random"]) if (enc, n) in cell and cell[enc, n]["vs_random"]
                       else "–" for n in steps)])
    what = "cross-validation (pooled)" if set_name == "cv" else "held-out test set (fold ensemble)"
    return Table(["encoder", *(f"{n} steps" for n in steps)], body,
                 f"lesion location, {what}: macro AUROC [95 % CI]; second row: the difference to random init on the "
                 "same patients [paired 95 % CI]")


def leaves_random(rows: list[dict], enc: str, set_name: str) -> str:
    """Where ``enc`` leaves random init on one set: the first step whose paired difference to random init has
    its CI above 0."""
    mine = sorted((r for r in rows if r["encoder"] == enc and r["set"] == set_name and r["vs_random"]),
                  key=lambda r: r["steps"])
    if not mine:
        return "no point to compare"
    first = next((r for r in mine if _side(r["vs_random"]) > 0), None)
    if first is None:
        return f"not within its {mine[-1]['steps']} steps"
    return f"at {first['steps']} steps ({_signed(first['vs_random'])})"


def add_steps(report: Report, plan: BenchmarkPlanLike, rows: list[dict], figure: str) -> None:
    """The "Pretraining steps" section: the figure, a table per set, and where each encoder leaves random init."""
    cfg = plan.cfg
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    sentences = [f"{encoder_label(e)} leaves random init (paired CI of the difference above 0) on cross-validation "
                 f"{leaves_random(rows, e, 'cv')}, on the held-out set {leaves_random(rows, e, 'holdout')}."
                 for e in encoders]
    section = report.add(
        "Pretraining steps",
        f"Snapshots of one pretraining run per encoder (after {', '.join(map(str, cfg.step_snapshots))} optimizer "
        "steps; `clearct pretrain --snapshot-steps`), each extracted and cross-validated on lesion location with the "
        "encoder's own task settings; 0 steps is random init (the initialisation every run starts from) and the "
        "last point the finished encoder. A snapshot is not a shorter run: the learning-rate and momentum schedules "
        "span the whole run.", *sentences)
    section.figures.append(Figure(figure, "lesion-location macro AUROC against pretraining steps (95 % CI bands)"))
    section.tables += [steps_table(rows, s) for s in ("cv", "holdout") if any(r["set"] == s for r in rows)]


def _ci(r: dict) -> str:
    return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if math.isfinite(r["value"]) else "–"


def _tasks(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r["task"] for r in rows))


def curves_figure(rows: list[dict], stem: Path) -> list[Path]:
    """Held-out AUROC against the number of labelled training patients (log axis; the nested shares): one panel
    per task, one line (with its 95 % patient-bootstrap CI band) per family —
    :func:`clearct.evaluate.curves.draw_curves` on each panel."""
    tasks = _tasks(rows)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        mine = [{**r, "command": r["family"]} for r in rows if r["task"] == task]  # draw_curves: a line per command
        draw_curves(ax, mine, x="train_patients")
        ticks = sorted({int(r["train_patients"]) for r in mine})
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(task, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, stem)


def curve_table(rows: list[dict]) -> Table:
    """Rows = task × family, columns = shares, cells the held-out AUROC [95 % CI]; the caption gives the training
    and test patients per share."""
    shares = sorted({r["share"] for r in rows})
    cell = {(r["task"], r["family"], r["share"]): r for r in rows}
    keys = list(dict.fromkeys((r["task"], r["family"]) for r in rows))
    body = [[t, f, *(_ci(cell[t, f, s]) if (t, f, s) in cell else "–" for s in shares)] for t, f in keys]
    sizes = []
    for task in _tasks(rows):
        n = {r["share"]: int(r["train_patients"]) for r in rows if r["task"] == task}
        test = next(int(r["test_patients"]) for r in rows if r["task"] == task)
        sizes.append(f"{task}: {' / '.join(str(n[s]) for s in shares if s in n)} training, {test} test patients")
    caption = ("held-out AUROC (macro over the task's classes) of each share's fold ensemble [95 % patient-bootstrap "
               "CI]; " + "; ".join(sizes))
    return Table(["task", "family", *(f"share {s:g}" for s in shares)], body, caption)


def _best(rows: list[dict]) -> dict | None:
    finite = [r for r in rows if math.isfinite(r["value"])]
    return max(finite, key=lambda r: r["value"]) if finite else None


def _three_d_clause(rows: list[dict]) -> str:
    """Whether the 3D fine-tune is above every CLEAR family at some share, and whether the CIs separate them."""
    ft = {r["share"]: r for r in rows if r["command"] == "finetune3d" and math.isfinite(r["value"])}
    if not ft:
        return ""
    wins, separated = [], []
    for share, r in sorted(ft.items()):
        clear = _best([c for c in rows if c["share"] == share and c["command"] != "finetune3d"])
        if clear is None or r["value"] > clear["value"]:
            wins.append(f"{share:g}")
            if clear is None or r["ci_low"] > clear["ci_high"]:
                separated.append(f"{share:g}")
    if not wins:
        return "; the 3D fine-tune is not above the best CLEAR family at any share"
    sep = f"its CI above theirs at {', '.join(separated)}" if separated else "the CIs overlap"
    return f"; the 3D fine-tune is above every CLEAR family at share{'s' * (len(wins) > 1)} {', '.join(wins)} ({sep})"


def curve_sentence(task: str, rows: list[dict]) -> str:
    """One sentence from the numbers of one task: the best family at the smallest share (and whether its CI clears
    the others'), whether the 3D route wins anywhere, and whether everything is at chance."""
    mine = [r for r in rows if r["task"] == task]
    smallest = min(r["share"] for r in mine)
    at = [r for r in mine if r["share"] == smallest]
    best = _best(at)
    if best is None:
        return f"{task}: no finite held-out AUROC at share {smallest:g}."
    text = (f"{task}: at the smallest share ({smallest:g}, {int(best['train_patients'])} training patients) "
            f"{best['family']} is highest ({_ci(best)})")
    rivals = [r for r in at if r is not best and math.isfinite(r["value"])]
    if rivals:
        clear = all(r["ci_high"] < best["ci_low"] for r in rivals)
        text += ", its CI above every other family's" if clear else ", within the CI of another family"
    text += _three_d_clause(mine)
    finite = [r for r in mine if math.isfinite(r["value"])]
    if all(r["ci_low"] <= 0.5 <= r["ci_high"] for r in finite):
        text += "; every CI contains 0.5 (chance level) at this size"
    return text + "."


def cost_tables(cfg: BenchmarkConfig, compute: dict[str, dict]) -> list[Table]:
    """The cost of one more task per curve task, as :func:`clearct.evaluate.efficiency.cost_table` renders it."""
    tables = []
    for task, summary in compute.items():
        header, rows, ratio = cost_table(summary)
        tables.append(Table(header, rows, f"{task}: the cost of one more task — CLEAR with {summary['encoder']} "
                            f"({cfg.curve_folds}-fold MIL crossval at share {max(cfg.curve_shares):g}) against the "
                            f"3D fine-tune on the same patients and folds. {ratio}"))
    return tables


def add_curves(report: Report, plan: BenchmarkPlanLike, curves: dict, figure: str) -> None:
    """The "Data efficiency" section: figure, the curve table, one sentence per task and the compute tables."""
    rows, cfg, ft = curves["rows"], plan.cfg, plan.finetune3d
    three_d = (f"3D fine-tune: `{ft.arch}` width {ft.width:g} on a {'×'.join(map(str, ft.grid))} grid, "
               f"≤ {ft.epochs} epochs, batch {ft.batch_size}" if cfg.curve_finetune3d else "no 3D family")
    section = report.add(
        "Data efficiency",
        f"Each family is trained on nested shares ({', '.join(f'{s:g}' for s in cfg.curve_shares)}) of the "
        f"labelled training patients, {cfg.curve_folds}-fold cross-validated inside each share, and its fold "
        f"ensemble predicts the same held-out test patients ({plan.crossval.test_frac:g} of the cohort, seed "
        f"{cfg.seed}) for "
        f"every share and family. CLEAR: ABMIL on the benchmark's features of each curve encoder; {three_d}.",
        *(curve_sentence(task, rows) for task in _tasks(rows)))
    section.figures.append(Figure(figure, "held-out AUROC vs labelled training patients (95 % CI bands)"))
    section.tables += [curve_table(rows), *cost_tables(cfg, curves["compute"])]


def build_report(plan: BenchmarkPlanLike, results: dict, machine: dict, figure: str,
                 times: dict[str, dict], paired: dict[str, list[dict]]) -> Report:
    """``plan``: the benchmark's resolved settings (:class:`clearct.workflows.benchmark.BenchmarkPlan`); ``times``:
    steps.json's {step: {status, seconds, cpu_seconds}}."""
    cfg, synth, pretrain, mil = plan.cfg, plan.synth, plan.pretrain, plan.crossval
    report = Report("clearct benchmark — CLEAR's encoder comparison on synthetic CT")
    load = f"load average {machine['load_start'][0]:.1f} at start, {machine['load_end'][0]:.1f} at the end"
    wall = sum(t["seconds"] for t in times.values())
    cpu = sum(t.get("cpu_seconds", 0.0) for t in times.values())
    report.add("Setup",
               f"Machine: {machine['cores']}-core CPU ({machine['cpu']})"
               f"{', GPU ' + machine['gpu'] if machine['gpu'] else ''}, torch {machine['torch']}; "
               f"{machine['date']}; this invocation {machine['wall_s'] / 60:.1f} min ({load}); all steps, "
               f"summed over the invocations that ran them, {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU "
               "(`steps.json`; on a shared machine wall exceeds CPU / cores).",
               f"Cohorts: train {cfg.patients} patients (pretraining, Tasks 1–2), external {cfg.external_patients} "
               f"(acquisition preset `external`), stage {cfg.stage_patients}; {synth.size} px × {synth.slices} "
               f"slices, lesion contrast {synth.lesion_contrast:g}, lesion size {synth.lesion_size_mm[0]:g}–"
               f"{synth.lesion_size_mm[1]:g} mm.",
               f"Encoders: `{pretrain.arch}` at {plan.image_size} px for every 2D encoder, {pretrain.epochs} "
               f"pretraining epochs (supervised ceiling: {cfg.supervised_epochs}), batch {pretrain.batch_size}, "
               f"{pretrain.lesion_share or 0:.0%} of each epoch from annotated slices; DrasCLR {cfg.drasclr_epochs} "
               f"epochs. ABMIL: ≤ {mil.epochs} epochs, lr {mil.lr:g}, min-steps {mil.min_steps}, {mil.folds} folds "
               f"(stage: nested {cfg.stage_folds}), held-out test share {mil.test_frac:g}.")
    for rs, table in paper_tables(results):
        report.add(rs.title).tables.append(table)
    add_paired(report, results, paired)
    section = report.add("λ ablation", "Macro AUROC of LECL-λ against λ; MoCo dashed (band: ± sd), random init "
                         "dotted.")
    section.figures.append(Figure(figure, "AUROC vs λ"))
    section.tables.append(Table(["result set", "MoCo − random", "best LECL − MoCo", "LECL-1 − MoCo",
                                 "supervised − best LECL", "best encoder"],
                                comparison_rows(results), "differences of macro AUROC"))
    return report


def _vs(row: dict) -> dict:
    """A steps-axis row's paired difference to random init as flat columns (empty at step 0)."""
    d = row["vs_random"] or {}
    return {f"vs_random_{k}": d.get(k, "") for k in ("value", "ci_low", "ci_high")}


def write_results(plan: BenchmarkPlanLike, root: Path, results: dict, machine: dict, times: dict[str, dict], *,
                  paired: dict[str, list[dict]] | None = None, steps: list[dict] | None = None,
                  curves: dict | None = None) -> dict[str, Path]:
    """Write ``results/{results.json, tables.md, lambda.png|svg, report.md|html}``, with steps-axis rows
    ``steps.csv`` and ``steps-axis.png|svg``, with curve rows ``curves.csv`` and ``curves.png|svg``; returns
    their paths."""
    folder = root / "results"
    folder.mkdir(parents=True, exist_ok=True)
    curves, paired, steps = curves or {"rows": [], "compute": {}}, paired or {}, steps or []
    atomic_write_text(folder / "results.json", json.dumps(
        {"machine": machine, "auroc": results, "paired": paired, "steps_axis": steps, "curves": curves}, indent=1))
    lambda_figure(results, folder / "lambda")
    report = build_report(plan, results, machine, "lambda.png", times, paired)
    if steps:
        write_csv(folder / "steps.csv", [{k: v for k, v in r.items() if k != "vs_random"} | _vs(r) for r in steps])
        steps_figure(steps, folder / "steps-axis")
        add_steps(report, plan, steps, "steps-axis.png")
    if curves["rows"]:
        write_csv(folder / "curves.csv", curves["rows"])
        curves_figure(curves["rows"], folder / "curves")
        add_curves(report, plan, curves, "curves.png")
    write_report(report, folder)
    tables = Report(report.title, [s for s in report.sections if s.tables])
    atomic_write_text(folder / "tables.md", to_markdown(tables))
    return {"tables": folder / "tables.md", "lambda": folder / "lambda.png", "report": folder / "report.html"}

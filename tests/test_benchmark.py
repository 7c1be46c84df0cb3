"""clearct benchmark: the plan (pure), per-step resume, and a tiny end-to-end run that writes the paper tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearct.common.errors import ClearctError
from clearct.config import BenchmarkConfig
from clearct.synth.findings import LOCATIONS, LUNG_FINDINGS
from clearct.workflows import benchmark as bm
from clearct.workflows import benchmark_results as br
from clearct.workflows.runner import MARKER, upstream_markers

TINY = {
    "encoders": ["lecl-3", "moco", "drasclr"], "patients": 12, "external_patients": 6, "stage_patients": 12,
    "drasclr_epochs": 1, "stage_folds": 2, "device": "cpu",
    "synth": {"size": 48, "slices": 10, "lesion_size_mm": [20, 50]},
    "pretrain": {"epochs": 1, "batch_size": 16, "image_size": 48, "mlp_dim": 32, "proj_dim": 16, "workers": 0,
                 "drasclr": {"channels": [4, 8], "queue": 16, "grid_mm": 80, "voxel_mm": 5}},
    "extract": {"workers": 0},
    "crossval": {"folds": 2, "test_frac": 0.25, "epochs": 1, "min_steps": 5, "bootstrap": 20},
    # data-efficiency curves: one CLEAR family and the 3D fine-tune at two shares, a toy 3D network
    "curve_shares": [0.5, 1.0], "curve_encoders": ["lecl-3"], "curve_folds": 2,
    "finetune3d": {"grid": [8, 16, 16], "width": 0.25, "epochs": 1, "workers": 0},
    # the pretraining-steps axis: one snapshot of MoCo's 7-step run (120 slices, batch 16)
    "step_snapshots": [2],
}


def plan(cfg: BenchmarkConfig, root: Path) -> list[bm.Step]:
    return bm.plan_steps(bm.resolve_plan(cfg), root)


def test_plan_shares_cohorts_encoders_and_features(tmp_path):
    cfg = BenchmarkConfig(out=tmp_path, **{**TINY, "encoders": ["lecl-3", "random", "moco", "lecl-0", "supervised",
                                                                "drasclr"]})
    steps = plan(cfg, tmp_path)
    names = [s.name for s in steps]
    assert names[:3] == ["synth train", "synth external", "synth stage"]
    # one pretraining per encoder, none for random init
    assert [n for n in names if n.startswith("pretrain")] == [
        "pretrain lecl-3", "pretrain moco", "pretrain lecl-0", "pretrain supervised", "pretrain drasclr"]
    # one encoder after the other: its pretraining, extractions and tasks before the next encoder's
    assert names.index("crossval lecl-3 stage") < names.index("extract random train-both")
    lam = {s.name: s.config.lam for s in steps if s.name.startswith("pretrain lecl")}
    assert lam == {"pretrain lecl-0": 0.0, "pretrain lecl-3": 3.0}
    # every 2D encoder: three feature sets (Task 2 reads Task 1's lung rows); DrasCLR: only what the lung task needs
    assert sorted(n for n in names if n.startswith("extract lecl-3 ")) == [
        "extract lecl-3 external-lung", "extract lecl-3 stage-lung", "extract lecl-3 train-both"]
    assert sorted(n for n in names if n.startswith("extract drasclr")) == [
        "extract drasclr external-lung", "extract drasclr train-lung"]
    assert [n for n in names if "drasclr" in n and n.split()[0] in ("crossval", "deploy")] == [
        "crossval drasclr lung", "deploy drasclr lung-external"]
    # same budget for every 2D encoder: their pretrain configs differ only in method, λ, folder and the lesion
    # sampling / crops that plain MoCo does not use; the ceiling differs in its epochs too (the snapshots of the
    # steps axis: tested below)
    pre = {s.name: s.config.model_dump(exclude={"snapshot_steps"}) for s in steps
           if s.name.startswith("pretrain") and "drasclr" not in s.name}
    moco, lecl, sup = pre["pretrain moco"], pre["pretrain lecl-3"], pre["pretrain supervised"]
    assert {k for k in moco if moco[k] != lecl[k]} == {"method", "lam", "out", "lesion_share", "lesion_crop_scale"}
    assert lecl["arch"] == bm.PRESET["pretrain"]["arch"] and lecl["epochs"] == 1  # the preset, then the user's value
    assert lecl["tau"] == 0.2 and lecl["image_size"] == 48  # the command's default; the user's value
    assert moco["lesion_share"] is None and lecl["lesion_share"] == sup["lesion_share"] == 0.5
    assert {k for k in lecl if lecl[k] != sup[k]} == {"method", "lam", "out", "lesion_crop_scale", "epochs"}
    random_src = next(s for s in steps if s.name == "extract random train-both").config.encoder
    assert random_src == "random:resnet_tiny"
    # the tasks read the features their encoder's extraction wrote; Task 1 uses both windows, the others lung
    by_name = {s.name: s for s in steps}
    assert by_name["crossval moco location"].config.features == by_name["extract moco train-both"].out
    assert by_name["extract moco train-both"].config.windows == ["lung", "abdomen"]
    assert by_name["extract moco stage-lung"].config.windows == ["lung"]
    assert by_name["crossval moco lung"].config.features == by_name["extract moco train-both"].out
    assert by_name["crossval moco lung"].config.use_windows == ["lung"]
    assert by_name["crossval moco location"].config.use_windows is None
    assert by_name["crossval drasclr lung"].config.features == by_name["extract drasclr train-lung"].out
    assert by_name["crossval moco stage"].config.nested and by_name["crossval moco stage"].config.task == "binary"
    assert by_name["crossval moco location"].config.test_frac == 0.25
    assert by_name["deploy moco lung-external"].config.labels == tmp_path / "cohorts/external/labels.csv"
    assert by_name["synth external"].config.acquisition == "external"
    assert by_name["synth external"].config.seed != by_name["synth train"].config.seed
    assert by_name["synth stage"].config.primary_tumour == 1.0


def test_plan_respects_tasks_and_rejects_unknown_names(tmp_path):
    cfg = BenchmarkConfig(out=tmp_path, **{**TINY, "tasks": ["stage"], "encoders": ["moco", "drasclr"]})
    names = [s.name for s in plan(cfg, tmp_path)]
    assert "extract moco stage-lung" in names and not any("location" in n or "lung-external" in n for n in names)
    assert not any(n.startswith(("extract drasclr", "crossval drasclr")) for n in names)
    with pytest.raises(ClearctError, match="unknown benchmark encoder"):
        plan(BenchmarkConfig(out=tmp_path, encoders=["simclr"]), tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        BenchmarkConfig(out=tmp_path, tasks="location,survival")


def test_plan_curve_steps_read_the_benchmark_features_with_one_seed_and_test_share(tmp_path):
    cfg = BenchmarkConfig(out=tmp_path, **{**TINY, "curve_encoders": ["lecl-3", "supervised", "drasclr"]})
    steps = plan(cfg, tmp_path)
    by_name = {s.name: s for s in steps}
    curves = [s for s in steps if s.name.startswith("curve ")]
    # supervised is not a benchmark encoder here: skipped; DrasCLR enters the lung task only; curves come last
    assert [s.name for s in curves] == ["curve lecl-3 location", "curve finetune3d location", "curve lecl-3 lung",
                                        "curve drasclr lung", "curve finetune3d lung"]
    assert steps[-len(curves):] == curves
    assert by_name["curve lecl-3 location"].config.run.features == by_name["extract lecl-3 train-both"].out
    assert by_name["curve drasclr lung"].config.run.features == by_name["extract drasclr train-lung"].out
    for task, windows in (("location", ["lung", "abdomen"]), ("lung", ["lung"])):
        runs = [s.config.run for s in curves if s.name.endswith(task)]
        # the settings that draw the held-out patients and the nested shares are the same for every family
        keys = ("labels", "targets", "task", "seed", "test_frac", "folds", "val_frac", "nested", "split_column")
        assert len({tuple(str(getattr(r, k)) for k in keys) for r in runs}) == 1
        assert runs[0].test_frac == cfg.crossval.test_frac and runs[0].folds == cfg.curve_folds
        ft = by_name[f"curve finetune3d {task}"].config.run
        assert ft.scans == tmp_path / "cohorts/train/scans.csv" and ft.windows == windows
        assert ft.grid == [8, 16, 16] and ft.cache_dir == tmp_path / "volume-cache"
    # a curve step reads its features: re-extracting re-runs it (nested config paths count as upstream)
    extract = by_name["extract lecl-3 train-both"]
    extract.out.mkdir(parents=True)
    (extract.out / MARKER).write_text("{}")
    assert list(upstream_markers(by_name["curve lecl-3 location"], steps)) == [extract.name]
    assert not any(s.name.startswith("curve") for s in plan(cfg.model_copy(update={"curves": False}), tmp_path))
    with pytest.raises(ClearctError, match="unknown benchmark encoder"):
        plan(cfg.model_copy(update={"curve_encoders": ["lecl1"]}), tmp_path)
    with pytest.raises(ValueError, match="curve_shares"):
        BenchmarkConfig(out=tmp_path, curve_shares=[0.0, 1.0])


def _table(md: str, title: str) -> list[list[str]]:
    """The rows (cells) of the markdown table under the section ``title``."""
    block = md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if not ln.startswith("|---")]


@pytest.mark.slow
def test_tiny_benchmark_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "bench"
    cfg = BenchmarkConfig(out=out, **TINY)
    assert bm.run_benchmark(cfg) == 0
    results = out / "results"
    md = (results / "tables.md").read_text()
    # Table 2: rows = encoders (DrasCLR is a lung-task method), columns = 8 locations + average + pooled
    t2 = _table(md, "Table 2 — lesion location, held-out test set (both windows)")
    assert t2[0] == ["encoder", *LOCATIONS, "average AUROC", "pooled AUROC [95% CI]"]
    assert [r[0] for r in t2[1:]] == ["moco", "lecl-3"]  # canonical order, not the run order
    t3 = _table(md, "Table 3b — lung abnormalities, external cohort (other scanner), fold ensemble")
    assert t3[0][1:8] == list(LUNG_FINDINGS)
    assert [r[0] for r in t3[1:]] == ["moco", "lecl-3", "drasclr"]
    t4 = _table(md, "Table 4 — stage (high vs low), nested cross-validation (lung window)")
    assert t4[0] == ["encoder", "AUROC", "pooled AUROC [95% CI]"] and len(t4) == 3
    data = json.loads((results / "results.json").read_text())
    for key in ("location/holdout", "location/cv", "lung/cv", "lung/external", "stage/cv"):
        assert key in data["auroc"]
    # the cells are the numbers of the task folders: check one against metrics.csv
    cell = data["auroc"]["lung/cv"]["moco"]["macro"]
    rows = br.read_metric_rows(out / "tasks/moco/lung/metrics.csv")
    macro = next(r for r in rows if r["set"] == "cv" and r["target"] == "macro" and r["metric"] == "auroc")
    assert cell["mean"] == pytest.approx(macro["fold_mean"]) and cell["sd"] == pytest.approx(macro["fold_sd"])
    first_cell = next(r for r in t4[1:] if r[0] == "moco")[1]
    assert first_cell == f"{data['auroc']['stage/cv']['moco']['macro']['mean']:.3f} ± " \
                         f"{data['auroc']['stage/cv']['moco']['macro']['sd']:.3f}"
    hold = data["auroc"]["location/holdout"]["lecl-3"]["macro"]
    assert 0 <= hold["mean"] <= 1 and hold["sd"] >= 0  # bootstrap sd of a held-out set
    assert (results / "lambda.png").stat().st_size > 5000 and (results / "report.html").is_file()
    # paired differences: of the comparisons only "best LECL − MoCo" has both encoders here; its value is the
    # difference of the two pooled macro AUROCs (the same patients), its CI from the paired bootstrap
    for key, rows in data["paired"].items():
        assert [(r["pair"], r["a"], r["b"]) for r in rows] == [("best LECL − moco", "lecl-3", "moco")]
        cells = data["auroc"][key]
        assert rows[0]["value"] == pytest.approx(cells["lecl-3"]["macro"]["value"] - cells["moco"]["macro"]["value"],
                                                 abs=2e-5)
        assert rows[0]["ci_low"] <= rows[0]["ci_high"]
    assert set(data["paired"]) == {"location/holdout", "location/cv", "lung/cv", "lung/external", "stage/cv"}
    # the steps axis: MoCo's snapshot after step 2 and the finished run (7 steps); no random init row to pair with
    axis = {(r["steps"], r["set"]): r for r in data["steps_axis"]}
    assert set(axis) == {(n, s) for n in (2, 7) for s in ("cv", "holdout")}
    assert axis[7, "cv"]["value"] == pytest.approx(data["auroc"]["location/cv"]["moco"]["macro"]["value"])
    assert all(r["vs_random"] is None for r in axis.values())
    assert "## Pretraining steps" in (results / "report.md").read_text() and (results / "steps-axis.png").is_file()
    assert "λ ablation" in (results / "report.md").read_text()
    steps = json.loads((results / "steps.json").read_text())["steps"]
    assert all(s["status"] == "ran" for s in steps.values())
    n_steps = len(steps)

    # resume: a second run redoes no step and leaves every step's output untouched
    markers = {p: p.stat().st_mtime_ns for p in out.rglob(MARKER)}
    h5 = {p: p.stat().st_mtime_ns for p in (out / "features").rglob("*.h5")}
    assert len(markers) == n_steps and h5
    assert bm.run_benchmark(cfg) == 0
    steps = json.loads((results / "steps.json").read_text())["steps"]
    assert [s["status"] for s in steps.values()] == ["reused"] * n_steps
    assert {p: p.stat().st_mtime_ns for p in out.rglob(MARKER)} == markers
    assert {p: p.stat().st_mtime_ns for p in (out / "features").rglob("*.h5")} == h5
    assert "0 step(s) ran" in capsys.readouterr().out
    _check_curves(out, cfg)


def _check_curves(out: Path, cfg: BenchmarkConfig) -> None:
    """The data-efficiency section of the tiny run: one row per family × task × share, nested shares, one
    held-out set per task for every family, the figure and the cost of one more task for both routes."""
    import csv

    results = out / "results"
    with open(results / "curves.csv") as fh:
        rows = list(csv.DictReader(fh))
    families = ["CLEAR lecl-3", "3D fine-tune"]
    keys = sorted((r["task"], r["family"], float(r["share"])) for r in rows)
    assert keys == sorted((t, f, s) for t in ("location", "lung") for f in families for s in (0.5, 1.0))
    assert {r["metric"] for r in rows} == {"auroc"} and {r["target"] for r in rows} == {"macro"}
    for task in ("location", "lung"):
        splits = {(fam, s): json.loads((out / "curves" / task / fam / f"share-{s:g}" / "splits.json").read_text())
                  for fam in ("lecl-3", "finetune3d") for s in (0.5, 1.0)}
        train = {k: {p for j in sp["jobs"] for p in j["train"] + j["val"] + j["test"]} for k, sp in splits.items()}
        held = {tuple(sp["holdout"]) for sp in splits.values()}
        assert len(held) == 1 and held.pop()  # the same held-out patients for every family and share
        for s in (0.5, 1.0):  # the same training patients too: one draw of nested shares for both families
            assert train["lecl-3", s] == train["finetune3d", s]
        assert train["lecl-3", 0.5] < train["lecl-3", 1.0]  # nested shares
    report = (results / "report.md").read_text()
    assert "## Data efficiency" in report and "![held-out AUROC vs labelled training patients" in report
    assert (results / "curves.png").stat().st_size > 5000
    compute = json.loads((results / "results.json").read_text())["curves"]["compute"]
    assert set(compute) == {"location", "lung"} and compute["lung"]["encoder"] == "lecl-3"
    stages = {r["stage"]: r for r in compute["location"]["rows"]}
    assert {"CLEAR pretrain (once)", "CLEAR extract (once)"} <= set(stages)
    for route in ("CLEAR: one more task (MIL crossval)", "3D: one more task (finetune3d)"):
        assert stages[route]["flops"] > 0 and route in report
    assert compute["location"]["ratio_3d_over_clear"]["flops"] > 0
    assert "location: at the smallest share (0.5" in report


def test_the_default_benchmark_resolves_every_section(tmp_path):
    """No section given: the preset fills what it names, the commands' defaults the rest — the ≥ 1,000-scan
    size: 128² × 32-slice cohorts, encoders at 96 px, one pretraining epoch, the paper's rows and the λ ablation."""
    resolved = bm.resolve_plan(BenchmarkConfig(out=tmp_path))
    assert resolved.pretrain.arch == bm.PRESET["pretrain"]["arch"] and resolved.pretrain.tau == 0.2
    assert resolved.crossval.lr == bm.PRESET["crossval"]["lr"] and resolved.crossval.model == "abmil"
    assert resolved.image_size == bm.PRESET["pretrain"]["image_size"] < resolved.synth.size
    cfg = resolved.cfg
    assert cfg.patients * (1 - resolved.crossval.test_frac) >= 960 and resolved.pretrain.epochs == 1
    assert cfg.encoders == ["random", "moco", "lecl-1", "lecl-0", "supervised", "lecl-3", "lecl-5"]


def test_default_plan_steps_axis_and_curves(tmp_path):
    """The default plan: every encoder's row, then the steps axis of LECL-1, MoCo and the ceiling (snapshots of
    their own pretraining run), then the curves of four CLEAR families and the 3D fine-tune."""
    steps = plan(BenchmarkConfig(out=tmp_path), tmp_path)
    names = [s.name for s in steps]
    by_name = {s.name: s for s in steps}
    snaps = {n.split()[1]: by_name[n].config.snapshot_steps for n in names if n.startswith("pretrain ")}
    assert snaps == {"moco": [75, 150, 300], "lecl-1": [75, 150, 300], "lecl-0": [], "supervised": [75, 150, 300],
                     "lecl-3": [], "lecl-5": []}
    axis = [n for n in names if " step-" in n]
    assert axis == [f"{kind} {enc} step-{n}{' location' * (kind == 'crossval')}" for enc in ("lecl-1", "moco",
                    "supervised") for n in (75, 150, 300) for kind in ("extract", "crossval")]
    curves = [n for n in names if n.startswith("curve ")]
    assert names.index(axis[-1]) < names.index(curves[0]) and names[-len(curves):] == curves
    assert [n for n in curves if n.endswith("location")] == [
        "curve lecl-1 location", "curve moco location", "curve random location", "curve supervised location",
        "curve finetune3d location"]


def test_steps_axis_extracts_each_snapshot_and_reuses_the_location_task(tmp_path):
    cfg = BenchmarkConfig(out=tmp_path, **{**TINY, "encoders": ["random", "moco", "lecl-3"],
                                           "step_encoders": ["lecl-3", "random", "moco"], "step_snapshots": [4, 2]})
    steps = plan(cfg, tmp_path)
    by_name = {s.name: s for s in steps}
    # random init has no pretraining steps: its row is step 0 of every axis, not an axis of its own
    assert [n for n in by_name if " step-" in n] == [
        "extract lecl-3 step-2", "crossval lecl-3 step-2 location", "extract lecl-3 step-4",
        "crossval lecl-3 step-4 location", "extract moco step-2", "crossval moco step-2 location",
        "extract moco step-4", "crossval moco step-4 location"]
    ex, cv = by_name["extract moco step-4"], by_name["crossval moco step-4 location"]
    assert Path(ex.config.encoder) == tmp_path / "encoders/moco/snapshots/step-4"
    assert ex.config.windows == by_name["extract moco train-both"].config.windows == ["lung", "abdomen"]
    assert ex.config.scans == by_name["extract moco train-both"].config.scans
    task = by_name["crossval moco location"].config.model_dump()
    assert {k for k, v in cv.config.model_dump().items() if task[k] != v} == {"features", "out"}
    assert cv.config.features == ex.out == bm.step_folder(tmp_path, "moco", 4) / "features"
    # the snapshot lies in the pretraining run's folder: re-pretraining re-extracts it
    pre = by_name["pretrain moco"]
    pre.out.mkdir(parents=True)
    (pre.out / MARKER).write_text("{}")
    assert list(upstream_markers(ex, steps)) == ["pretrain moco"]
    assert list(upstream_markers(by_name["extract moco train-both"], steps)) == ["pretrain moco"]  # a str path
    points = bm.step_points(bm.resolve_plan(cfg), tmp_path)
    assert points["moco"] == [(0, tmp_path / "tasks/random/location"), (2, bm.step_folder(tmp_path, "moco", 2) /
                              "location"), (4, bm.step_folder(tmp_path, "moco", 4) / "location")]
    assert not any(" step-" in s.name for s in plan(cfg.model_copy(update={"step_snapshots": []}), tmp_path))


def test_bootstrap_sd_matches_resampling_patients_with_sklearn(tmp_path):
    """The held-out ± is the sd of the AUROC over patient resamples: check it against a plain loop."""
    import csv

    import numpy as np
    from sklearn.metrics import roc_auc_score

    from clearct.evaluate.metrics import bootstrap_weights

    rng = np.random.default_rng(1)
    n = 30
    y = np.r_[np.ones(12), np.zeros(n - 12)]
    s = {"a": y * 0.8 + rng.random(n), "b": rng.random(n)}  # a: informative, b: noise
    path = tmp_path / "predictions.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "scan_id", "set", "target", "probability", "label"])
        for i in range(n):
            for t in ("a", "b"):
                w.writerow([f"p{i:02d}", f"s{i:02d}", "holdout", t, s[t][i], y[i]])
            w.writerow([f"p{i:02d}", f"s{i:02d}", "cv", "a", 0.5, y[i]])  # another set: ignored
    got = br.bootstrap_sd(path, "holdout", n_boot=300, seed=4)
    weights = bootstrap_weights(np.array([f"p{i:02d}" for i in range(n)]), 300, 4)
    per = {}
    for t in ("a", "b"):
        vals = []
        for row in weights:
            idx = np.repeat(np.arange(n), row.astype(int))
            vals.append(roc_auc_score(y[idx], s[t][idx]) if 0 < y[idx].sum() < len(idx) else np.nan)
        per[t] = np.array(vals)
        assert got[t] == pytest.approx(np.nanstd(per[t]), abs=1e-12)
    assert got["macro"] == pytest.approx(np.nanstd((per["a"] + per["b"]) / 2), abs=1e-12)
    assert 0.02 < got["a"] < 0.2


def test_paired_difference_matches_a_loop_over_patient_resamples_with_sklearn():
    """The paired macro-AUROC difference: both models scored on the same resampled patients (a patient with two
    scans is drawn with both), against a plain loop with sklearn; a target without positives in a resample is left
    out of that resample's macro, as metrics.csv does."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from clearct.evaluate.metrics import bootstrap_weights, paired_difference

    rng = np.random.default_rng(3)
    n = 40
    patients = np.array([f"p{i // 2:02d}" for i in range(n)])  # two scans per patient
    y = np.stack([rng.random(n) < 0.4, rng.random(n) < 0.08], axis=1).astype(float)  # the second target: rare
    a = y * 0.9 + rng.random((n, 2))  # informative
    b = y * 0.3 + rng.random((n, 2))  # weaker, on the same scans
    value, lo, hi = paired_difference(y, a, b, patients, n_boot=400, seed=5)

    def macro(idx: np.ndarray, s: np.ndarray) -> float:
        vals = [roc_auc_score(y[idx, j], s[idx, j]) for j in range(2) if 0 < y[idx, j].sum() < len(idx)]
        return float(np.mean(vals)) if vals else np.nan

    everyone = np.arange(n)
    assert value == pytest.approx(macro(everyone, a) - macro(everyone, b), abs=1e-12)
    diffs = []
    for row in bootstrap_weights(patients, 400, 5):
        idx = np.repeat(everyone, row.astype(int))
        diffs.append(macro(idx, a) - macro(idx, b))
    d = np.array(diffs)
    d = d[np.isfinite(d)]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(d, [0.025, 0.975])), abs=1e-12)
    assert 0 < lo < value < hi  # a clearly better model: the CI excludes 0
    # the same scores on both sides: exactly 0 in every resample
    assert paired_difference(y[:, 0], a[:, 0], a[:, 0], patients, n_boot=50) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        paired_difference(y, a[:, :1], b, patients)

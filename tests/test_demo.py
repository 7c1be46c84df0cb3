"""clearct demo: stage configs per size, and the whole pipeline end to end at --size test (then resumed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clearct.cli import main
from clearct.config import DemoConfig
from clearct.io.features import read_features
from clearct.report.demo_numbers import learned_arm
from clearct.report.document import Figure, Report, Table, to_html, to_markdown
from clearct.report.layouts import ARM_TITLES, DemoLayout
from clearct.synth import LOCATIONS
from clearct.workflows.demo import SIZES, TARGETS, demo_steps, resolve_size


def test_sizes_and_overrides_give_valid_stage_configs(tmp_path):
    arms = ["lecl", "random", "supervised"]
    for name in SIZES:
        cfg = DemoConfig(out=tmp_path, size=name)
        stages = demo_steps(cfg, resolve_size(cfg), tmp_path, predict_scan=tmp_path / "scan", learned="supervised")
        assert [s.name for s in stages] == [
            "synth", "synth-external", "pretrain", "pretrain-supervised",
            *[f"extract-{a}{e}" for a in arms for e in ("", "-external")], "control-marks", "control-marks-external",
            *[f"location-{a}{d}" for a in [*arms, "control"] for d in ("", "-deploy")],
            *[f"lung-{a}{d}" for a in arms for d in ("", "-deploy")],
            *[f"attention-{a}" for a in [*arms, "control"]], "predict"]
    cfg = DemoConfig(out=tmp_path, size="test", patients=9, external_patients=3, pretrain={"epochs": 2},
                     crossval={"epochs": 5}, seed=4)
    plan = resolve_size(cfg)
    stages = {s.name: s.config for s in demo_steps(cfg, plan, tmp_path)}
    # attention and predict need the arm that learned (after crossval), predict also a synthesised scan
    assert not any(name.startswith(("attention", "predict")) for name in stages)
    looked = {s.name: s.config for s in demo_steps(cfg, plan, tmp_path, predict_scan=tmp_path / "s", learned="random")}
    assert looked["predict"].model == looked["location-random"].out
    assert looked["predict"].encoder == looked["extract-random"].encoder  # the learned arm's encoder
    assert looked["predict"].lesions == looked["attention-random"].lesions == tmp_path / "external" / "lesions.csv"
    # heatmaps for every encoder arm (the pointing game; random init its floor), figures for the learned arm
    assert [looked[f"attention-{a}"].heatmaps for a in [*arms, "control"]] == [True, True, True, False]
    assert [looked[f"attention-{a}"].figures > 0 for a in [*arms, "control"]] == [False, True, False, True]
    assert (stages["synth"].patients, stages["synth"].seed) == (9, 4)
    ext = stages["synth-external"]
    assert (ext.patients, ext.seed, ext.acquisition, ext.unannotated) == (3, 5, "external", 0.0)
    # predict writes DICOM objects for a DICOM series: the external cohort is DICOM whatever the training one is
    small = DemoConfig(out=tmp_path, size="small")
    cohorts = {s.name: s.config for s in demo_steps(small, resolve_size(small), tmp_path)[:2]}
    assert (cohorts["synth"].format, cohorts["synth-external"].format) == ("nifti", "dicom")
    lecl, sup = stages["pretrain"], stages["pretrain-supervised"]
    assert (lecl.epochs, lecl.method, lecl.lam) == (2, "lecl", 1.0) and sup.method == "supervised"
    assert lecl.arch == SIZES["test"]["pretrain"]["arch"] and lecl.lr == SIZES["test"]["pretrain"]["lr"]  # preset
    assert lecl.tau == 0.2 and sup.epochs == SIZES["test"]["supervised_epochs"]  # command default, preset
    # the ceiling and LECL share the architecture, size, batch, schedule and sampling
    same = ("arch", "image_size", "batch_size", "lr", "lesion_share", "scans", "lesions", "cache_dir", "seed")
    assert all(getattr(lecl, k) == getattr(sup, k) for k in same)
    assert stages["extract-random"].encoder == f"random:{lecl.arch}"
    assert stages["extract-random"].image_size == lecl.image_size
    assert stages["extract-lecl"].encoder == str(tmp_path / "encoders" / "lecl")
    assert stages["extract-lecl"].windows == ["lung", "abdomen"]
    # every arm gets the same ABMIL settings; the lung task uses the lung window of the same files
    base = stages["location-lecl"].model_dump(exclude={"features", "out"})
    for arm in ("random", "supervised", "control"):
        assert stages[f"location-{arm}"].model_dump(exclude={"features", "out"}) == base
    assert stages["location-lecl"].epochs == 5 and stages["location-lecl"].targets == list(LOCATIONS)
    assert stages["lung-lecl"].use_windows == ["lung"]
    assert stages["lung-lecl"].features == stages["location-lecl"].features
    assert stages["location-lecl-deploy"].model == looked["attention-lecl"].model == stages["location-lecl"].out
    # viewers of the most confident errors where the report links them: the location models
    assert stages["location-supervised"].error_viewers and stages["location-supervised-deploy"].error_viewers
    assert not stages["lung-supervised"].error_viewers and not stages["lung-supervised-deploy"].error_viewers
    assert stages["location-lecl-deploy"].lesions == tmp_path / "external" / "lesions.csv"
    # the positive control: the same crossval on the marked copies of the LECL features
    assert stages["control-marks"].features == stages["location-lecl"].features
    assert stages["location-control"].features == stages["control-marks"].out
    assert stages["control-marks-external"].features == stages["extract-lecl-external"].out
    assert (stages["control-marks-external"].seed, stages["control-marks-external"].targets) == (
        stages["control-marks"].seed, stages["control-marks"].targets)  # the same directions as in training
    assert stages["location-control-deploy"].features == stages["control-marks-external"].out


def test_report_document_renders_tables_figures_code_bold_and_links():
    report = Report("t")
    section = report.add("S", "run `clearct demo` <now>, **then** open [the `viewer`](predict/viewer.html)")
    section.tables.append(Table(["a", "b"], [["1", "[x](errors/a b.html) `c`"]], "cap"))
    section.figures.append(Figure("figures/f.png", "a figure"))
    md, page = to_markdown(report), to_html(report)
    assert "| a | b |" in md and "![a figure](figures/f.png)" in md
    assert "[the `viewer`](predict/viewer.html)" in md  # Markdown keeps its own markup
    assert "<code>clearct demo</code> &lt;now&gt;" in page and "<img src='figures/f.png'" in page
    assert "<strong>then</strong>" in page
    assert "<a href='predict/viewer.html'>the <code>viewer</code></a>" in page
    # a cell is rendered like a paragraph; a target with a space is not a link
    assert "<td>[x](errors/a b.html) <code>c</code></td>" in page


def _images(report_dir: Path) -> tuple[list[str], list[str]]:
    md = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md), re.findall(r"<img src='([^']+)'", page)


def _links(report_dir: Path) -> tuple[list[str], list[str]]:
    md = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    return re.findall(r"(?<!!)\[[^\]]*\]\(([^)]+)\)", md), re.findall(r"<a href='([^']+)'", page)


def _section(md: str, heading: str) -> str:
    return md.split(f"## {heading}")[1].split("\n## ")[0]


@pytest.mark.slow
def test_demo_end_to_end_then_resumed(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--size", "test", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "[1/32] synth" in printed and "=== clearct demo: summary ===" in printed
    for label in ("location macro AUROC, LECL, CV", "location macro AUROC, LECL, external",
                  "location macro AUROC, random init (same architecture), CV",
                  "location macro AUROC, supervised ceiling, CV",
                  "location macro AUROC, positive control (key slices marked), CV", "lung macro AUROC, LECL, CV"):
        assert label in printed, label
    learned = learned_arm(DemoLayout(out))
    title = ARM_TITLES[learned]
    assert f"looked at: {title}" in printed

    md_images, html_images = _images(out)
    assert md_images == html_images and len(md_images) >= 12
    for rel in md_images:
        assert (out / rel).is_file() and (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    assert {"figures/examples.png", "figures/pretrain-loss.png", "figures/roc.png",
            "predict/attention.png"} <= set(md_images)
    assert sum(r.startswith(f"attention/{learned}/figures/") for r in md_images) == 3
    assert sum(r.startswith("attention/control/figures/") for r in md_images) == 3
    # heatmap overlays of the learned arm's top slices and of the predicted scan, a reliability diagram
    assert sum(r.startswith(f"attention/{learned}/heatmaps/") for r in md_images) >= 1
    assert any(r.startswith("predict/heatmaps/") for r in md_images)
    assert any(re.fullmatch(rf"location/{learned}/crossval/plots/cv-\w+-reliability\.png", r) for r in md_images)
    # links: the viewers (predict, attention, most confident errors), the DICOM objects, the reliability diagrams
    md_links, html_links = _links(out)
    assert md_links == html_links
    for rel in md_links:
        assert (out / rel).is_file(), rel
    assert "predict/viewer.html" in md_links
    assert sum(r.startswith(f"attention/{learned}/viewers/") and r.endswith(".html") for r in md_links) == 3
    assert any(r.startswith(f"location/{learned}/crossval/errors/") for r in md_links)
    assert any(r.startswith(f"location/{learned}/deploy/errors/") for r in md_links)
    assert {"predict/dicom/sr.dcm", "predict/dicom/kos.dcm"} <= set(md_links)
    assert any(r.startswith("predict/dicom/pm-") for r in md_links)

    md = (out / "report.md").read_text()
    for heading in ("Summary", "Cohorts", "Pretraining", "Lesion location: the arms compared",
                    f"Lesion location: {title}, per location", f"Calibration of {title}'s probabilities",
                    "Lung abnormalities: the arms compared", "Where the models look: attention and heatmaps",
                    "Attention over slices: positive control", "One scan: clearct predict",
                    f"The most confident errors of {title}", "What to try next", "Stage times",
                    "Where everything lies"):
        assert f"## {heading}" in md, heading
    summary = _section(md, "Summary")
    for part in ("**What ran.**", "**What came out.**", "**What it means.**"):
        assert part in summary
    # the comparison table: one row per arm, each with a CV and an external macro AUROC with intervals, and the
    # plain statement whether LECL lies above random init with non-overlapping intervals
    location = _section(md, "Lesion location: the arms compared")
    for name in ("LECL", "random init (same architecture)", "supervised ceiling",
                 "positive control (key slices marked)"):
        assert re.search(rf"\| {re.escape(name)} \| \d\.\d{{3}} \[\d\.\d{{3}}, \d\.\d{{3}}\] \| \d\.\d{{3}} \[",
                         location), name
    assert re.search(r"Cross-validated, LECL is (above|below|not separated from) random init", location)
    # the learned arm's per-location table: one AUROC row per target + macro
    detail = _section(md, f"Lesion location: {title}, per location")
    rows = [line for line in detail.splitlines() if line.startswith(tuple(f"| {t} |" for t in [*TARGETS, "macro"]))]
    assert len(rows) == len(TARGETS) + 1
    calibration = _section(md, f"Calibration of {title}'s probabilities")
    assert re.search(r"macro ECE \d\.\d{3} \[", calibration) and "Brier score" in calibration
    # the pointing game of every encoder arm beside the attention hit share
    look = _section(md, "Where the models look: attention and heatmaps")
    for name in ("LECL", "random init (same architecture)", "supervised ceiling"):
        assert re.search(rf"\| {re.escape(name)} \| [^|]+ \| [^|]+ \| \d+ \| \d+/\d+ \| (\d\.\d\d \(\d+/\d+\)|–)",
                         look), name
    # the report speaks of this run only: no development targets, no figures measured elsewhere
    assert "wanted" not in md and "RESULTS.md" not in md and "frontier" not in md.lower()
    marked = sorted((out / "features" / "control" / "cohort").glob("*.h5"))
    assert [p.name for p in marked] == [p.name for p in sorted((out / "features" / "lecl" / "cohort").glob("*.h5"))]

    times = json.loads((out / "demo-times.json").read_text())
    assert all(times[s]["status"] == "ran" for s in ("synth", "pretrain", "pretrain-supervised", "extract-lecl",
                                                     "location-lecl", "lung-random", "attention-random", "predict"))
    assert times["pretrain"]["cpu_seconds"] > 0 and times["total"]["cpus"] >= 1
    prediction = json.loads((out / "predict" / "prediction.json").read_text())
    assert set(prediction["scores"]) == set(TARGETS)
    assert prediction["encoder"]["name"] == "resnet_tiny"
    # predict used the learned arm's models and encoder
    assert prediction["model"]["folder"] == str(out / "location" / learned / "crossval")
    features = read_features(next((out / "features" / learned / "external").glob("*.h5")), load_feats=False)
    assert prediction["encoder"]["weights_sha256"] == features.weights_sha256
    feature_files = sorted((out / "features" / "lecl" / "cohort").glob("*.h5"))
    assert len(feature_files) == SIZES["test"]["patients"]
    stamps = {p: p.stat().st_mtime_ns for p in feature_files}
    encoder_sha = json.loads((out / "encoders" / "lecl" / "encoder.json").read_text())["weights_sha256"]

    # the same command again resumes: pretraining and feature files are reused, the report is rebuilt
    assert main(["demo", "--size", "test", "--out", str(out), "--device", "cpu"]) == 0
    times = json.loads((out / "demo-times.json").read_text())
    assert times["pretrain"]["status"] == times["pretrain-supervised"]["status"] == "reused"
    assert {p: p.stat().st_mtime_ns for p in feature_files} == stamps
    assert json.loads((out / "encoders" / "lecl" / "encoder.json").read_text())["weights_sha256"] == encoder_sha
    assert "reused" in (out / "report.md").read_text()

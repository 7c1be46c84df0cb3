"""clearct demo: stage configs per size, and the whole pipeline end to end at --size test (then resumed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clearct.cli import main
from clearct.config import DemoConfig
from clearct.report.document import Figure, Report, Table, to_html, to_markdown
from clearct.synth import LOCATIONS
from clearct.workflows.demo import SIZES, TARGETS, demo_stages, resolve_size


def test_targets_are_the_synth_locations():
    assert list(LOCATIONS) == TARGETS


def test_sizes_and_overrides_give_valid_stage_configs(tmp_path):
    for name in SIZES:
        cfg = DemoConfig(out=tmp_path, size=name)
        stages = demo_stages(cfg, resolve_size(cfg), tmp_path, predict_scan=tmp_path / "scan")
        assert [s.name for s in stages] == ["synth", "synth-external", "pretrain", "extract", "extract-external",
                                            "crossval", "control-marks", "control", "deploy", "attention",
                                            "control-marks-external", "control-deploy", "control-attention",
                                            "predict"]
    cfg = DemoConfig(out=tmp_path, size="test", patients=9, external_patients=3, epochs=2, mil_epochs=5, seed=4)
    stages = {s.name: s.config for s in demo_stages(cfg, resolve_size(cfg), tmp_path)}
    assert "predict" not in stages  # needs a synthesised scan
    assert (stages["synth"].patients, stages["synth"].seed) == (9, 4)
    ext = stages["synth-external"]
    assert (ext.patients, ext.seed, ext.acquisition, ext.unannotated) == (3, 5, "external", 0.0)
    assert (stages["pretrain"].epochs, stages["pretrain"].method, stages["pretrain"].lam) == (2, "lecl", 1.0)
    assert stages["crossval"].epochs == 5 and stages["crossval"].targets == TARGETS
    assert stages["extract"].windows == ["lung", "abdomen"] and stages["extract"].encoder == str(tmp_path / "encoder")
    assert stages["deploy"].model == stages["attention"].model == tmp_path / "crossval"
    # the positive control: the same crossval on the marked copies of the training features
    assert stages["control-marks"].features == stages["crossval"].features
    assert stages["control"].features == stages["control-marks"].out != stages["crossval"].features
    assert stages["control"].model_dump(exclude={"features", "out"}) == stages["crossval"].model_dump(
        exclude={"features", "out"})
    marked_ext = stages["control-marks-external"].out
    assert stages["control-marks-external"].features == stages["extract-external"].out
    assert (stages["control-marks-external"].seed, stages["control-marks-external"].targets) == (
        stages["control-marks"].seed, stages["control-marks"].targets)  # the same directions as in training
    assert stages["control-deploy"].features == stages["control-attention"].features == marked_ext
    assert stages["control-deploy"].model == stages["control-attention"].model == stages["control"].out


def test_report_document_renders_tables_figures_and_code():
    report = Report("t")
    section = report.add("S", "run `clearct demo` <now>")
    section.tables.append(Table(["a", "b"], [["1", "x|y"]], "cap"))
    section.figures.append(Figure("figures/f.png", "a figure"))
    md, page = to_markdown(report), to_html(report)
    assert "| a | b |" in md and "![a figure](figures/f.png)" in md
    assert "<code>clearct demo</code> &lt;now&gt;" in page and "<img src='figures/f.png'" in page


def _images(report_dir: Path) -> tuple[list[str], list[str]]:
    md = (report_dir / "report.md").read_text()
    page = (report_dir / "report.html").read_text()
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md), re.findall(r"<img src='([^']+)'", page)


@pytest.mark.slow
def test_demo_end_to_end_then_resumed(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--size", "test", "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "[1/15] synth" in printed and "=== clearct demo: summary ===" in printed
    assert "macro AUROC, cross-validation" in printed and "macro AUROC, external cohort" in printed
    assert "macro AUROC, positive control (key slices marked), CV" in printed
    assert "macro AUROC, positive control, external cohort" in printed

    md_images, html_images = _images(out)
    assert md_images == html_images and len(md_images) >= 6
    for rel in md_images:
        assert (out / rel).is_file() and (out / rel).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
    assert {"figures/examples.png", "figures/pretrain-loss.png", "figures/roc.png",
            "predict/attention.png"} <= set(md_images)
    assert sum(r.startswith("attention/figures/") for r in md_images) == 3
    assert sum(r.startswith("control-attention/figures/") for r in md_images) == 3
    md = (out / "report.md").read_text()
    for heading in ("Cohorts", "Pretraining (LECL)", "Lesion location: AUROC per target", "Attention over slices",
                    "Attention over slices: positive control", "One scan: clearct predict", "Stage times",
                    "Where everything lies"):
        assert f"## {heading}" in md
    # one AUROC row per target + macro, and each reports a CV value with a bootstrap interval
    auroc_section = md.split("## Lesion location: AUROC per target")[1].split("\n## ")[0]
    rows = [line for line in auroc_section.splitlines()
            if line.startswith(tuple(f"| {t} |" for t in [*TARGETS, "macro"]))]
    assert len(rows) == len(TARGETS) + 1
    assert re.search(r"\| macro \|  \| \d\.\d{3} \[\d\.\d\d, \d\.\d\d\]", md)
    assert "control, key slices marked: CV AUROC" in auroc_section and "Positive control" in auroc_section
    assert re.search(r"\| macro \|.*(\| \d\.\d{3} \[\d\.\d\d, \d\.\d\d\] ){2}\|$", rows[-1])
    marked = sorted((out / "features" / "control").glob("*.h5"))
    assert [p.name for p in marked] == [p.name for p in sorted((out / "features" / "cohort").glob("*.h5"))]

    times = json.loads((out / "demo-times.json").read_text())
    assert all(times[s]["status"] == "ran" for s in ("synth", "pretrain", "extract", "crossval", "predict"))
    assert times["pretrain"]["cpu_seconds"] > 0 and times["total"]["cpus"] >= 1
    prediction = json.loads((out / "predict" / "prediction.json").read_text())
    assert set(prediction["scores"]) == set(TARGETS)
    assert prediction["encoder"]["name"] == "vit_conv_test"
    feature_files = sorted((out / "features" / "cohort").glob("*.h5"))
    assert len(feature_files) == SIZES["test"].patients
    stamps = {p: p.stat().st_mtime_ns for p in feature_files}
    encoder_sha = json.loads((out / "encoder" / "encoder.json").read_text())["weights_sha256"]

    # the same command again resumes: pretraining and feature files are reused, the report is rebuilt
    assert main(["demo", "--size", "test", "--out", str(out), "--device", "cpu"]) == 0
    times = json.loads((out / "demo-times.json").read_text())
    assert times["pretrain"]["status"] == "reused"
    assert {p: p.stat().st_mtime_ns for p in feature_files} == stamps
    assert json.loads((out / "encoder" / "encoder.json").read_text())["weights_sha256"] == encoder_sha
    assert "reused" in (out / "report.md").read_text()

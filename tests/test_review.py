"""From the numbers to the images, end to end on a tiny synthetic DICOM cohort: extract → crossval (errors.csv and
error viewers) → deploy (errors/ listed in summary.json) → attention (viewers from the feature files' source) →
predict on one DICOM series (viewer.html with lesions and heatmaps, results as DICOM)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from clearct.cli import main
from clearct.evaluate.errors import confident_errors
from clearct.evaluate.tables import Predictions
from clearct.inference.review import choose_reviewed
from clearct.io.heatmaps import read_heatmaps


def _data(html: str) -> dict:
    return json.loads(re.search(r'<script id="viewerData" type="application/json">(.*?)</script>', html, re.S)[1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """8 synthetic DICOM scans, features of vit_conv_test, labels unrelated to the images (so there are errors),
    a 2-fold crossval."""
    root = tmp_path_factory.mktemp("review")
    assert main(["synth", str(root / "cohort"), "--format", "dicom", "--patients", "8", "--size", "48", "--slices",
                 "6", "--workers", "1", "--scan-range", "chest"]) == 0
    with open(root / "cohort" / "scans.csv") as fh:
        patients = [r["patient_id"] for r in csv.DictReader(fh)]
    with open(root / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["patient_id", "finding"], *[[p, i % 2] for i, p in enumerate(patients)]])
    assert main(["extract", "--scans", str(root / "cohort" / "scans.csv"), "--encoder", "vit_conv_test",
                 "--out", str(root / "feats"), "--device", "cpu", "--workers", "0"]) == 0
    assert main(["crossval", "--features", str(root / "feats"), "--labels", str(root / "labels.csv"), "--targets",
                 "finding", "--task", "multilabel", "--folds", "2", "--epochs", "2", "--min-steps", "10",
                 "--bootstrap", "20", "--device", "cpu", "--out", str(root / "cv")]) == 0
    return {"root": root, "cv": root / "cv", "feats": root / "feats", "cohort": root / "cohort"}


@pytest.mark.slow
def test_crossval_lists_its_most_confident_errors_with_viewers(trained) -> None:
    cv = trained["cv"]
    with open(cv / "errors.csv") as fh:
        errors = list(csv.DictReader(fh))
    with open(cv / "predictions.csv") as fh:
        preds = [r for r in csv.DictReader(fh) if r["set"] == "cv"]
    fp = [r for r in preds if float(r["label"]) == 0 and float(r["probability"]) >= float(r["threshold"])]
    fn = [r for r in preds if float(r["label"]) == 1 and float(r["probability"]) < float(r["threshold"])]
    assert fp or fn
    listed_fp = [r["scan_id"] for r in errors if r["error"] == "false_positive"]
    want_fp = [r["scan_id"] for r in sorted(fp, key=lambda r: -float(r["probability"]))][:3]
    assert listed_fp == want_fp
    assert len([r for r in errors if r["error"] == "false_negative"]) == min(3, len(fn))
    summary = json.loads((cv / "summary.json").read_text())
    assert sorted(summary["error_viewers"]) == sorted({f"errors/{r['scan_id']}.html" for r in errors})
    assert all(r["viewer"] == f"errors/{r['scan_id']}.html" for r in errors)
    row = errors[0]
    data = _data((cv / row["viewer"]).read_text())
    assert data["attention"] is not None and data["heatmaps"] is None
    assert len(data["slices"]) == 2 and len(data["slices"][0]) == 6  # the models' two windows, every slice
    assert "vs threshold" in (cv / row["viewer"]).read_text()


def test_crossval_without_error_viewers(trained, tmp_path) -> None:
    out = tmp_path / "cv"
    assert main(["crossval", "--features", str(trained["feats"]), "--labels", str(trained["root"] / "labels.csv"),
                 "--targets", "finding", "--folds", "2", "--epochs", "1", "--min-steps", "4", "--bootstrap", "10",
                 "--device", "cpu", "--out", str(out), "--no-error-viewers"]) == 0
    assert (out / "errors.csv").is_file() and not (out / "errors").exists()


def test_deploy_writes_error_viewers_and_lists_them(trained, tmp_path) -> None:
    out = tmp_path / "deploy"
    assert main(["deploy", "--model", str(trained["cv"]), "--features", str(trained["feats"]), "--labels",
                 str(trained["root"] / "labels.csv"), "--allow-overlap", "--bootstrap", "10", "--device", "cpu",
                 "--lesions", str(trained["cohort"] / "lesions.csv"), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "errors.csv") as fh:
        errors = list(csv.DictReader(fh))
    assert summary["error_viewers"] and len(summary["error_viewers"]) <= 6
    assert {f"errors/{r['scan_id']}.html" for r in errors} == set(summary["error_viewers"])
    for viewer in summary["error_viewers"]:
        assert (out / viewer).stat().st_size > 5_000


def test_attention_writes_viewers_from_the_feature_files(trained, tmp_path) -> None:
    out = tmp_path / "attention"
    assert main(["attention", "--model", str(trained["cv"]), "--features", str(trained["feats"]), "--figures", "2",
                 "--device", "cpu", "--out", str(out)]) == 0
    viewers = sorted((out / "viewers").glob("*.html"))
    assert len(viewers) == 2
    data = _data(viewers[0].read_text())
    assert data["attention"]["windows"] == ["lung", "abdomen"] and len(data["attention"]["curves"][0]) == 6


def test_predict_on_a_dicom_series(trained, tmp_path) -> None:
    scan = trained["cohort"] / "scans" / "s0p0002_ct"
    out = tmp_path / "predict"
    assert main(["predict", str(scan), "--model", str(trained["cv"]), "--encoder", "vit_conv_test", "--out",
                 str(out), "--device", "cpu", "--top-k", "3", "--lesions",
                 str(trained["cohort"] / "lesions.csv")]) == 0
    result = json.loads((out / "prediction.json").read_text())
    maps = read_heatmaps(out / result["heatmaps"])  # predict's own Grad-CAM maps of the top-3 instances
    windows = {maps.windows[w][0] for w in maps.window}
    # a parametric map per target and window that has a heatmap
    assert set(result["dicom_outputs"]) == {"sr", "kos", *(f"pm-finding-{w}" for w in windows)}
    page = (out / "viewer.html").read_text()
    data = _data(page)
    assert sorted(it["slice"] for it in data["heatmaps"]["items"]) == sorted(int(s) for s in maps.slice_index)
    with open(trained["cohort"] / "lesions.csv") as fh:
        boxes = [r for r in csv.DictReader(fh) if r["scan_id"] == "s0p0002_ct"]
    assert len(data["lesions"]) == len(boxes)
    assert f"{result['scores']['finding']:.3f}" in page and "vit_conv_test" in page
    kos = pydicom.dcmread(out / "dicom" / "kos.dcm")
    assert len([i for i in kos.ContentSequence if i.ValueType == "IMAGE"]) == 3


def test_confident_errors_order_and_thresholds() -> None:
    p = Predictions("binary", ["x"], np.array(list("abcdef")), np.array(list("ABCDEF")), np.array([1, 1, 1, 2, 2, 2]),
                    np.array([[0], [0], [0], [1], [1], [np.nan]], float), np.array([[0.9], [0.6], [0.2], [0.1], [0.7],
                                                                                    [0.99]]),
                    np.array([[0.5], [0.65], [0.1], [0.5], [0.5], [0.5]]))
    rows = confident_errors(p, "cv")
    # C is a false positive only at its own threshold 0.1; B (0.6 < 0.65) is correct; F is unlabelled
    assert [(r["error"], r["scan_id"]) for r in rows] == [("false_positive", "A"), ("false_positive", "C"),
                                                          ("false_negative", "D")]
    assert choose_reviewed(rows * 4, per_target=2) == ["A", "D"]
    assert choose_reviewed([{**r, "target": t} for t in "xyz" for r in rows], per_target=3, limit=2) == ["A", "D"]


def test_a_scan_without_its_ct_loses_only_its_viewer(trained, tmp_path, capsys) -> None:
    import shutil

    from clearct.inference.ensembles import load_ensemble
    from clearct.inference.review import review_errors

    out = tmp_path / "copy"
    out.mkdir()
    for name in ("errors.csv", "predictions.csv"):
        shutil.copy(trained["cv"] / name, out / name)
    viewers = review_errors(out, load_ensemble(trained["cv"]), trained["cv"], features=tmp_path / "no-features")
    assert viewers == [] and "no error viewer for" in capsys.readouterr().err
    with open(out / "errors.csv") as fh:
        assert {r["viewer"] for r in csv.DictReader(fh)} == {""}

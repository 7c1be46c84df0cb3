"""Calibration: ECE and Brier with patient-bootstrap CIs, the temperature and Platt maps, and --calibrate through
crossval, resume and deploy on planted-signal features."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import rankdata
from sklearn import metrics as skm

from clearct.cli import main
from clearct.common.errors import ClearctError
from clearct.evaluate.calibration import brier_score, expected_calibration_error, weighted_brier, weighted_ece
from clearct.evaluate.metrics import best_f1_threshold, bootstrap_weights, percentile_ci
from clearct.evaluate.tables import Predictions, compute_metrics
from clearct.mil.data import load_cohort
from clearct.mil.planted import planted_bags, write_planted_cohort
from clearct.mil.store import load_model
from clearct.mil.train import infer
from clearct.modeling.calibrate import check_calibration, fit_calibration
from clearct.modeling.tasks import TaskSpec, scores_from_outputs


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_ece_matches_a_hand_computed_value():
    y = np.array([0, 0, 1, 1, 1, 0], float)
    p = np.array([0.05, 0.15, 0.12, 0.85, 0.95, 0.55])
    # bins [0, .1]: 0.05 → |0 − 0.05|; (.1, .2]: 0.15, 0.12 → 2·|0.5 − 0.135|; (.5, .6]: |0 − 0.55|;
    # (.8, .9]: |1 − 0.85|; (.9, 1]: |1 − 0.95|
    hand = (0.05 + 2 * 0.365 + 0.55 + 0.15 + 0.05) / 6
    assert expected_calibration_error(y, p) == pytest.approx(hand, abs=1e-12)
    assert brier_score(y, p) == pytest.approx(np.mean((p - y) ** 2))
    ones = np.ones((1, len(y)))
    assert weighted_ece(y, p, ones)[0] == pytest.approx(hand, abs=1e-12)
    assert weighted_brier(y, p, ones)[0] == pytest.approx(brier_score(y, p))
    assert expected_calibration_error(y, y) == 0.0  # hard correct labels are perfectly calibrated


def test_bootstrap_ci_contains_the_point_and_resamples_patients():
    rng = np.random.default_rng(0)
    n_patients = 60
    patients = np.repeat([f"p{i:02d}" for i in range(n_patients)], 2)  # two scans per patient, alike
    p_patient = rng.uniform(0.02, 0.98, n_patients)
    y_patient = (rng.random(n_patients) < p_patient**2).astype(float)  # over-confident probabilities
    p, y = np.repeat(p_patient, 2), np.repeat(y_patient, 2)
    pred = Predictions("binary", ["t"], patients, np.array([f"s{i}" for i in range(len(p))]), np.ones(len(p), int),
                       y[:, None], p[:, None], np.full((len(p), 1), 0.5))
    rows = {r["metric"]: r for r in compute_metrics(pred, "cv", n_boot=1000, seed=0)}
    for metric, point in (("ece", expected_calibration_error(y, p)), ("brier", brier_score(y, p))):
        assert rows[metric]["value"] == pytest.approx(point)
        assert rows[metric]["ci_low"] < point < rows[metric]["ci_high"]

    w = bootstrap_weights(patients, 1000, seed=0)
    assert np.array_equal(w[:, 0::2], w[:, 1::2])  # the two scans of a patient move together
    assert (rows["ece"]["ci_low"], rows["ece"]["ci_high"]) == pytest.approx(percentile_ci(weighted_ece(y, p, w)))
    for b in range(3):  # a weighted resample is the sample it stands for
        counts = w[b].astype(int)
        assert weighted_ece(y, p, w[b : b + 1])[0] == pytest.approx(
            expected_calibration_error(np.repeat(y, counts), np.repeat(p, counts)))
        assert weighted_brier(y, p, w[b : b + 1])[0] == pytest.approx(brier_score(np.repeat(y, counts), np.repeat(p, counts)))
    # treating the 120 scans as independent patients would understate the uncertainty of 60 patients
    each_scan = np.array([f"x{i}" for i in range(len(p))])
    scan_ci = percentile_ci(weighted_ece(y, p, bootstrap_weights(each_scan, 1000, seed=0)))
    assert rows["ece"]["ci_high"] - rows["ece"]["ci_low"] > 1.2 * (scan_ci[1] - scan_ci[0])


def _cohort(kind: str, n: int, rng: np.random.Generator) -> tuple[TaskSpec, torch.Tensor, np.ndarray]:
    """Raw outputs of a mis-calibrated model and parsed labels. multilabel: target a over-confident (logits ×4),
    target b under-confident (×0.4); binary: two logits with a random common shift whose difference is ×4 the
    true log-odds; multiclass: three classes, logits ×3 plus a random shift per row."""
    if kind == "multilabel":
        z = rng.normal(0, 1.5, (n, 2))
        y = (rng.random((n, 2)) < _sigmoid(z)).astype(np.float32)
        return TaskSpec("multilabel", ["a", "b"]), torch.from_numpy(z * [4.0, 0.4]), y
    if kind == "binary":
        z = rng.normal(0, 1.5, n)
        y = (rng.random(n) < _sigmoid(z)).astype(np.float32)[:, None]
        shift = rng.normal(0, 3, n)
        return (TaskSpec("binary", ["t"], ["neg", "pos"]), torch.from_numpy(np.stack([shift, shift + 4 * z], 1)), y)
    z = rng.normal(0, 1.5, (n, 3))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p], np.float32)[:, None]
    return TaskSpec("multiclass", ["grade"], ["1", "2", "3"]), torch.from_numpy(3 * z + rng.normal(0, 3, (n, 1))), y


@pytest.mark.parametrize("kind", ["multilabel", "binary", "multiclass"])
@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_calibration_lowers_the_ece_of_a_miscalibrated_model_on_held_out_data(kind, method):
    rng = np.random.default_rng(1)
    spec, out_val, y_val = _cohort(kind, 3000, rng)
    _, out_test, y_test = _cohort(kind, 3000, rng)
    cal = fit_calibration(spec, out_val, y_val, method, "test")
    calibrated = TaskSpec.from_json({**spec.to_json(), "calibration": cal})
    before = scores_from_outputs(spec, out_test).numpy()
    after = scores_from_outputs(calibrated, out_test).numpy()
    y_eval = np.eye(3)[y_test[:, 0].astype(int)] if kind == "multiclass" else y_test
    for j, name in enumerate(spec.output_names):
        ece_before = expected_calibration_error(y_eval[:, j], before[:, j])
        ece_after = expected_calibration_error(y_eval[:, j], after[:, j])
        assert ece_after < 0.6 * ece_before and ece_after < 0.03, (name, ece_before, ece_after)
        assert brier_score(y_eval[:, j], after[:, j]) < brier_score(y_eval[:, j], before[:, j])
    if kind == "multiclass":
        assert np.allclose(after.sum(1), 1.0)
        if method == "temperature":  # one temperature keeps every argmax
            assert np.array_equal(after.argmax(1), before.argmax(1))
    if method == "temperature":  # the fitted temperature undoes the distortion
        expected = {"multilabel": [4.0, 0.4], "binary": [4.0], "multiclass": [3.0]}[kind]
        assert cal["temperature"] == pytest.approx(expected, rel=0.15)


@pytest.mark.parametrize("kind", ["multilabel", "binary"])
@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_calibration_never_changes_a_rank_metric(kind, method):
    rng = np.random.default_rng(2)
    spec, out_val, y_val = _cohort(kind, 500, rng)
    _, out_test, y_test = _cohort(kind, 500, rng)
    calibrated = TaskSpec.from_json({**spec.to_json(), "calibration": fit_calibration(spec, out_val, y_val, method,
                                                                                         "test")})
    before = scores_from_outputs(spec, out_test).double().numpy()
    after = scores_from_outputs(calibrated, out_test).numpy()
    assert not np.allclose(before, after)
    for j in range(before.shape[1]):
        assert np.array_equal(rankdata(before[:, j]), rankdata(after[:, j]))
        assert skm.roc_auc_score(y_test[:, j], after[:, j]) == skm.roc_auc_score(y_test[:, j], before[:, j])
        assert (skm.average_precision_score(y_test[:, j], after[:, j])
                == skm.average_precision_score(y_test[:, j], before[:, j]))


def test_platt_never_reverses_a_ranking_and_regression_is_refused(caplog):
    rng = np.random.default_rng(3)
    spec, out, y = _cohort("multilabel", 400, rng)
    with caplog.at_level(logging.WARNING, logger="clearct"):
        cal = fit_calibration(spec, -out, y, "platt", "fold-1")  # validation ranks both targets backwards
    assert cal == {"method": "platt", "slope": [1.0, 1.0], "intercept": [0.0, 0.0]}
    assert caplog.text.count("the wrong way round") == 2
    y[:, 1] = 0  # no positive of b in the validation part: b stays as it is
    with caplog.at_level(logging.WARNING, logger="clearct"):
        cal = fit_calibration(spec, out, y, "temperature", "fold-1")
    assert cal["temperature"][1] == 1.0 and cal["temperature"][0] != 1.0 and "no positive or no negative b" in caplog.text
    with pytest.raises(ClearctError, match="regression task has no probabilities"):
        check_calibration("temperature", TaskSpec("regression", ["size"]))
    check_calibration("none", TaskSpec("regression", ["size"]))


# --- crossval --calibrate, resume and deploy on planted features ----------------------------------------------------

FAST = ["--folds", "3", "--epochs", "4", "--lr", "5e-4", "--min-steps", "60", "--bootstrap", "100", "--device", "cpu",
        "--test-frac", "0.25"]


@pytest.fixture(scope="module")
def calibrated_cv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("calibrated")
    bags = planted_bags(48, dim=16, instances=(10, 20), planted=(2, 4), shift=3.0, targets=2, seed=0)
    labels = write_planted_cohort(root, bags)
    out = root / "cv"
    assert main(["crossval", "--features", str(root / "features"), "--labels", str(labels), "--targets", "t0,t1",
                 "--out", str(out), "--calibrate", "temperature", *FAST]) == 0
    return out


def _logits(folder: Path, features: Path, patients: list[str] | None = None,
            dtype: type = np.float32) -> tuple[np.ndarray, list[str]]:
    """The raw outputs of the model in ``folder`` on the bags of ``patients`` (all when None), and their scan ids;
    features held as ``dtype`` (crossval keeps them as float16, deploy as float32)."""
    model, meta = load_model(folder)
    bags = [b for b in load_cohort(features, None, None, dtype=dtype).bags
            if patients is None or b.patient_id in patients]
    z = infer(model, bags, torch.device("cpu"), meta["settings"]["eval_instances"])[0].numpy()
    return z.astype(np.float64), [b.scan_id for b in bags]


@pytest.mark.slow
def test_crossval_calibrates_each_fold_model_on_its_validation_part(calibrated_cv):
    cv = calibrated_cv
    features = cv.parent / "features"
    labels = {r["patient_id"]: [float(r["t0"]), float(r["t1"])] for r in _rows(cv.parent / "labels.csv")}
    for fold in ("fold-1", "fold-2", "fold-3"):
        meta = json.loads((cv / fold / "model.json").read_text())
        temperature = np.array(meta["task"]["calibration"]["temperature"])
        assert meta["task"]["calibration"]["method"] == "temperature" and temperature.shape == (2,)
        assert np.all(temperature > 0) and not np.allclose(temperature, 1.0)
        # the thresholds are the F1-optimal ones of the calibrated validation scores
        z, scans = _logits(cv / fold, features, meta["val_patients"], np.float16)
        y = np.array([labels[f"p{s[1:]}"] for s in scans])
        calibrated = _sigmoid(z / temperature)
        assert meta["thresholds"] == pytest.approx([best_f1_threshold(y[:, j], calibrated[:, j]) for j in range(2)])
    metrics = {(r["set"], r["target"], r["metric"]): r for r in _rows(cv / "metrics.csv")}
    for set_name in ("cv", "holdout"):
        for target in ("t0", "t1", "macro"):
            for metric in ("ece", "brier", "auroc"):
                assert (set_name, target, metric) in metrics
        for target in ("t0", "t1"):
            for kind in ("reliability", "calibration"):
                assert (cv / "plots" / f"{set_name}-{target}-{kind}.png").stat().st_size > 1000
                assert (cv / "plots" / f"{set_name}-{target}-{kind}.svg").is_file()
    preds = [r for r in _rows(cv / "predictions.csv") if (r["set"], r["target"]) == ("cv", "t0")]
    y, p = np.array([float(r["label"]) for r in preds]), np.array([float(r["probability"]) for r in preds])
    assert float(metrics[("cv", "t0", "ece")]["value"]) == pytest.approx(expected_calibration_error(y, p), abs=1e-5)
    assert json.loads((cv / "summary.json").read_text())["calibration"] == "temperature"


@pytest.mark.slow
def test_deploy_averages_the_calibrated_probabilities_of_the_folds(calibrated_cv, tmp_path):
    cv = calibrated_cv
    ext = tmp_path / "ext"
    labels = write_planted_cohort(ext, planted_bags(24, dim=16, instances=(10, 20), planted=(2, 4), shift=3.0,
                                                    targets=2, seed=7, prefix="x"))
    dep = tmp_path / "dep"
    assert main(["deploy", "--model", str(cv), "--features", str(ext / "features"), "--labels", str(labels),
                 "--out", str(dep), "--bootstrap", "100", "--device", "cpu"]) == 0
    expected = []
    for fold in ("fold-1", "fold-2", "fold-3"):  # sigmoid(logit / T) of every fold model, averaged
        temperature = np.array(json.loads((cv / fold / "model.json").read_text())["task"]["calibration"]["temperature"])
        z, scans = _logits(cv / fold, ext / "features")
        expected.append(_sigmoid(z / temperature))
    mean = dict(zip(scans, np.mean(expected, axis=0)))
    got = {(r["scan_id"], r["target"]): float(r["probability"]) for r in _rows(dep / "predictions.csv")}
    assert len(got) == 2 * len(mean)
    for scan, p in mean.items():
        assert [got[(scan, "t0")], got[(scan, "t1")]] == pytest.approx(p, rel=1e-5)
    assert {r["metric"] for r in _rows(dep / "metrics.csv")} >= {"ece", "brier", "auroc"}
    assert (dep / "plots" / "deploy-t1-calibration.png").stat().st_size > 1000
    assert json.loads((dep / "summary.json").read_text())["calibration"] == "temperature"


@pytest.mark.slow
def test_resume_with_another_calibration_refits_only_the_map(calibrated_cv, tmp_path):
    cv = tmp_path / "cv"
    shutil.copytree(calibrated_cv, cv)
    weights = (cv / "fold-1" / "model.safetensors").read_bytes()
    assert main(["crossval", "--features", str(calibrated_cv.parent / "features"), "--labels",
                 str(calibrated_cv.parent / "labels.csv"), "--targets", "t0,t1", "--out", str(cv),
                 "--calibrate", "platt", *FAST]) == 0
    assert (cv / "fold-1" / "model.safetensors").read_bytes() == weights  # reused, not trained again
    meta = json.loads((cv / "fold-1" / "model.json").read_text())
    assert meta["task"]["calibration"]["method"] == "platt" and len(meta["task"]["calibration"]["slope"]) == 2
    assert "reused" not in meta
    # each fold model ranks its test patients as before: the fold AUROCs and AUPRCs are the same
    old = {(r["set"], r["target"], r["metric"]): r for r in _rows(calibrated_cv / "metrics.csv")}
    new = {(r["set"], r["target"], r["metric"]): r for r in _rows(cv / "metrics.csv")}
    for target in ("t0", "t1"):
        for metric in ("auroc", "auprc"):
            assert new[("cv", target, metric)]["fold_mean"] == old[("cv", target, metric)]["fold_mean"]

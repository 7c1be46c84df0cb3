"""crossval / deploy / attention end to end on h5 feature files with a planted signal, noise and broken input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn import metrics as skm

from clearct.cli import main
from clearct.inference.ensembles import load_ensemble
from clearct.io.features import read_features, write_features
from clearct.mil.data import select_windows
from clearct.mil.planted import LesionMarks, mark_lesion_slices, planted_bags, write_planted_cohort

FAST = ["--folds", "3", "--epochs", "10", "--lr", "5e-4", "--min-steps", "300", "--bootstrap", "200", "--device", "cpu"]


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _metric(cv: Path, target: str, metric: str, set_name: str = "cv") -> float:
    row = [r for r in _rows(cv / "metrics.csv") if (r["set"], r["target"], r["metric"]) == (set_name, target, metric)]
    return float(row[0]["value"])


def _crossval(root: Path, labels: Path, targets: str, *extra: str) -> Path:
    out = root / "cv"
    rc = main(["crossval", "--features", str(root / "features"), "--labels", str(labels), "--targets", targets,
               "--out", str(out), *FAST, *extra])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("planted")
    bags = planted_bags(60, dim=32, instances=(20, 40), planted=(3, 5), shift=4.0, windows=2, seed=0)
    labels = write_planted_cohort(root, bags)
    return _crossval(root, labels, "t0"), bags


@pytest.mark.slow
def test_planted_signal_is_found(planted, tmp_path):
    cv, bags = planted
    assert _metric(cv, "t0", "auroc") > 0.95
    preds = _rows(cv / "predictions.csv")
    y = [float(r["label"]) for r in preds]
    assert _metric(cv, "t0", "auroc") == pytest.approx(skm.roc_auc_score(y, [float(r["probability"]) for r in preds]),
                                                       abs=1e-5)
    splits = json.loads((cv / "splits.json").read_text())
    folds = [set(j["test"]) for j in splits["jobs"]]
    assert sum(map(len, folds)) == len(set().union(*folds)) == 60  # no patient in two folds
    for j in splits["jobs"]:  # nor in training and test of one model
        assert not set(j["train"]) & set(j["test"]) and not set(j["val"]) & set(j["test"])
    meta = json.loads((cv / "fold-1" / "model.json").read_text())
    assert meta["encoder"]["encoder"] == "planted" and meta["task"]["targets"] == ["t0"]
    assert set(meta["train_patients"]) == set(splits["jobs"][0]["train"])
    for ext in ("png", "svg"):
        assert (cv / "plots" / f"cv-t0.{ext}").stat().st_size > 1000

    # most attention goes to the planted instances
    out = tmp_path / "attn"
    assert main(["attention", "--model", str(cv), "--features", str(cv.parent / "features"), "--out", str(out),
                 "--device", "cpu", "--figures", "2"]) == 0
    attn = _rows(out / "attention.csv")
    mass, top_hit, share = [], [], []
    for b in bags:
        if b.labels[0]:
            a = np.array([float(r["attention"]) for r in attn if r["scan_id"] == b.features.scan_id])
            assert a.sum() == pytest.approx(1.0, abs=1e-4)
            mass.append(a[b.planted].sum())
            top_hit.append(int(np.argmax(a)) in set(b.planted.tolist()))
            share.append(len(b.planted) / len(a))
    # the most attended instance is a planted one, and the planted ~15 % of a bag draw ≥ 2.5× their share
    assert np.mean(top_hit) >= 0.9, top_hit
    assert np.median(mass) > 2.5 * np.median(share), (mass, share)
    assert (out / "figures" / f"{bags[0].features.scan_id}.png").is_file()


@pytest.mark.slow
def test_deploy_ensemble_and_refusal(planted, tmp_path, capsys):
    cv, bags = planted
    # the training cohort itself: refused loudly, unless overridden
    args = ["deploy", "--model", str(cv), "--features", str(cv.parent / "features"),
            "--labels", str(cv.parent / "labels.csv"), "--bootstrap", "100", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    assert "were used to train these models" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "forced"), "--allow-overlap"]) == 0

    # a new cohort with the same signal
    ext = tmp_path / "ext"
    new = planted_bags(40, dim=32, instances=(20, 40), planted=(3, 5), shift=4.0, windows=2, seed=7, prefix="x")
    labels = write_planted_cohort(ext, new)
    dep = tmp_path / "dep"
    assert main(["deploy", "--model", str(cv), "--features", str(ext / "features"), "--labels", str(labels),
                 "--out", str(dep), "--bootstrap", "100", "--device", "cpu"]) == 0
    assert _metric(dep, "t0", "auroc", "deploy") > 0.9
    ens = load_ensemble(cv)
    assert len(ens.models) == 3
    from clearct.mil.data import load_cohort

    cohort = load_cohort(ext / "features", None, None, dtype=np.float32)
    scores, _ = ens.predict(cohort.bags)
    from clearct.mil.train import infer
    from clearct.modeling.tasks import scores_from_outputs

    single = [scores_from_outputs(ens.spec, infer(m, cohort.bags, ens.device)[0]).numpy() for m in ens.models]
    assert np.allclose(scores, np.mean(single, axis=0))
    by_scan = {r["scan_id"]: float(r["probability"]) for r in _rows(dep / "predictions.csv")}
    assert by_scan[cohort.bags[0].scan_id] == pytest.approx(float(scores[0, 0]), abs=1e-5)


@pytest.mark.slow
def test_noise_gives_chance_and_same_seed_same_metrics(tmp_path):
    bags = planted_bags(48, dim=16, instances=(10, 20), shift=0.0, seed=3)
    labels = write_planted_cohort(tmp_path, bags)
    args = ["crossval", "--features", str(tmp_path / "features"), "--labels", str(labels), "--targets", "t0",
            "--folds", "3", "--epochs", "4", "--min-steps", "100", "--bootstrap", "100", "--device", "cpu",
            "--no-resume"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "metrics.csv").read_text()
    assert a == (tmp_path / "b" / "metrics.csv").read_text()
    assert 0.2 < _metric(tmp_path / "a", "t0", "auroc") < 0.8


@pytest.mark.slow
def test_bad_input_is_reported_and_the_rest_goes_on(tmp_path, capsys):
    bags = planted_bags(30, dim=16, instances=(10, 20), targets=2, seed=4)
    labels = write_planted_cohort(tmp_path, bags)
    feats = tmp_path / "features"
    (feats / "s0000.h5").unlink()  # label row without features
    stray = read_features(feats / "s0001.h5")
    stray.scan_id, stray.patient_id = "stray", "nobody"
    write_features(feats / "stray.h5", stray)  # features without a label row
    nan = read_features(feats / "s0002.h5")
    nan.feats[3, 1] = np.nan
    write_features(feats / "s0002.h5", nan)  # NaN in the features
    with h5py.File(feats / "s0003.h5", "r+") as h5:  # an empty bag
        for name in ("feats", "slice_index", "z_mm", "window"):
            shape, dtype = h5[name].shape, h5[name].dtype
            del h5[name]
            h5.create_dataset(name, shape=(0, *shape[1:]), dtype=dtype)
    text = labels.read_text().replace("p0004,", "p0004,maybe#", 1).replace("maybe#0", "maybe").replace("maybe#1", "maybe")
    labels.write_text(text)  # an unknown label value
    out = tmp_path / "cv"
    assert main(["crossval", "--features", str(feats), "--labels", str(labels), "--targets", "t0,t1", "--task",
                 "multilabel", "--folds", "2", "--epochs", "2", "--min-steps", "10", "--bootstrap", "50", "--device",
                 "cpu", "--no-error-viewers", "--out", str(out)]) == 1
    # exit code 1: the broken inputs (NaN, empty bag, unknown label value) are failures, listed in failures.csv
    assert [r["scan_id"] for r in _rows(out / "failures.csv")] == ["s0002", "s0003", "s0004"]
    err = [line for line in capsys.readouterr().err.splitlines() if "clearct: warning" in line]
    assert len(err) == 5, err
    for needle in ("p0000", "stray", "NaN", "empty bag", "maybe"):
        assert sum(needle in line for line in err) == 1, (needle, err)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scans_used"] == 26  # 30 − missing − NaN − empty − unknown label
    assert summary["issues"] == {"labels_without_features": 1, "features_without_labels": 1, "nan_features": 1,
                                 "empty_bag": 1, "unknown_label": 1}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression", "survival"])
@pytest.mark.slow
def test_other_tasks_run_and_report_their_metrics(tmp_path, task):
    bags = planted_bags(30, dim=16, instances=(10, 20), targets=2, seed=5)
    labels = write_planted_cohort(tmp_path, bags)
    rows = _rows(labels)
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["patient_id", "kind", "grade", "size", "time", "event"])
        for i, r in enumerate(rows):
            w.writerow([r["patient_id"], "tumour" if r["t0"] == "1" else "normal", ["a", "b", "c"][i % 3],
                        float(r["t0"]) * 3 + i % 2, 10 - 5 * float(r["t0"]) + i % 4, (i + 1) % 3 > 0])
    targets = {"binary": "kind", "multiclass": "grade", "regression": "size", "survival": "time,event"}[task]
    out = tmp_path / "cv"
    assert main(["crossval", "--features", str(tmp_path / "features"), "--labels", str(labels), "--targets", targets,
                 "--task", task, "--folds", "2", "--epochs", "2", "--min-steps", "20", "--bootstrap", "50",
                 "--device", "cpu", "--out", str(out)]) == 0
    metrics = {(r["target"], r["metric"]) for r in _rows(out / "metrics.csv")}
    expected = {"binary": ("kind", "auroc"), "multiclass": ("macro", "accuracy"), "regression": ("size", "mae"),
                "survival": ("risk", "c_index")}[task]
    assert expected in metrics


def test_mark_lesion_slices_moves_exactly_the_key_slice_rows(tmp_path, caplog):
    bags = planted_bags(4, dim=16, instances=(6, 9), targets=1, shift=0.0, windows=2, seed=1)
    for b in bags:  # a large common offset and unequal spreads, as real features have
        b.features.feats = (b.features.feats * np.linspace(0.1, 3.0, 16) + 50.0).astype(np.float16)
    write_planted_cohort(tmp_path, bags)
    ids = [b.features.scan_id for b in bags]
    lesions = tmp_path / "lesions.csv"
    lesions.write_text("scan_id,slice_index,x1,y1,x2,y2,label\n"
                       f"{ids[0]},2,1,1,4,4,liver\n{ids[0]},4,1,1,4,4,lung\n{ids[1]},3,1,1,4,4,liver\n"
                       f"{ids[2]},1,1,1,4,4,other\n")
    (tmp_path / "features" / "broken.h5").write_bytes(b"not an h5 file")
    out = tmp_path / "marked"
    marks = LesionMarks(features=tmp_path / "features", lesions=lesions, out=out, targets=("liver", "lung"),
                        shift_sd=0.5, seed=3)
    with caplog.at_level("WARNING", logger="clearct"):
        assert mark_lesion_slices(marks) == 0
    assert "broken.h5" in caplog.text and "not marked" in caplog.text
    assert sorted(p.stem for p in out.glob("*.h5")) == sorted(ids)
    spread = np.concatenate([b.features.feats.astype(np.float32) for b in bags]).std(axis=0)
    steps = {}
    for b in bags:
        marked = read_features(out / f"{b.features.scan_id}.h5")
        assert marked.weights_sha256 == "planted+lesion-marks(shift_sd=0.5,seed=3)"
        assert marked.feats.dtype == np.float16 and marked.patient_id == b.features.patient_id
        delta = marked.feats.astype(np.float32) - b.features.feats.astype(np.float32)
        moved = sorted(set(marked.slice_index[np.abs(delta).max(axis=1) > 0.05].tolist()))
        expected = {ids[0]: [2, 4], ids[1]: [3]}.get(b.features.scan_id, [])  # "other" is not a target
        assert moved == expected, b.features.scan_id
        for slice_index, label in zip(expected, ["liver", "lung"] if b is bags[0] else ["liver"]):
            for row in np.flatnonzero(marked.slice_index == slice_index):  # every window of the slice
                steps.setdefault(label, []).append(delta[row])
    for label, rows in steps.items():
        in_spreads = np.array(rows) / spread  # the step in per-dimension standard deviations
        rms = np.sqrt((in_spreads**2).mean(axis=1))
        assert np.allclose(rms, 0.5, rtol=0.05), (label, rms)  # float16 rounding aside
        assert np.allclose(in_spreads, in_spreads[0], atol=0.05)  # one direction per label
    cos = np.dot(steps["liver"][0] / spread, steps["lung"][0] / spread) / (0.5**2 * 16)
    assert abs(cos) < 0.99  # the two labels get different directions


def test_select_windows_keeps_renumbers_and_names_what_is_missing():
    f = planted_bags(1, dim=4, instances=(3, 3), windows=2, seed=0)[0].features  # windows lung, abdomen
    f.extra = {"patch_center_mm": np.arange(6.0), "note": np.array([7.0])}
    only = select_windows(f, ["abdomen"])
    assert [w[0] for w in only.windows] == ["abdomen"] and only.window.tolist() == [0, 0, 0]
    assert np.array_equal(only.feats, f.feats[1::2]) and only.slice_index.tolist() == [0, 1, 2]
    assert only.extra["patch_center_mm"].tolist() == [1.0, 3.0, 5.0] and only.extra["note"].tolist() == [7.0]
    swapped = select_windows(f, ["abdomen", "lung"])
    assert swapped.window.tolist() == [1, 0, 1, 0, 1, 0] and [w[0] for w in swapped.windows] == ["abdomen", "lung"]
    with pytest.raises(ValueError, match="no bone window"):
        select_windows(f, ["lung", "bone"])


@pytest.mark.slow
def test_crossval_on_one_window_of_two_window_features(tmp_path, capsys):
    bags = planted_bags(40, dim=16, instances=(10, 20), planted=(2, 4), shift=4.0, windows=2, seed=2)
    labels = write_planted_cohort(tmp_path, bags)
    lung_only = tmp_path / "features" / f"{bags[0].features.scan_id}.h5"  # one file without the abdomen window
    write_features(lung_only, select_windows(bags[0].features, ["lung"]))
    out = tmp_path / "cv"
    assert main(["crossval", "--features", str(tmp_path / "features"), "--labels", str(labels), "--targets", "t0",
                 "--use-windows", "abdomen", "--out", str(out), "--folds", "2", "--epochs", "3", "--min-steps", "30",
                 "--bootstrap", "0", "--device", "cpu"]) == 1  # the file without the window is a failure
    assert f"{lung_only}: no abdomen window (the file has lung); scan left out" in capsys.readouterr().err
    meta = json.loads((out / "fold-1" / "model.json").read_text())
    assert [w[0] for w in meta["windows"]] == ["abdomen"] and meta["n_windows"] == 1
    assert len({r["patient_id"] for r in _rows(out / "predictions.csv")}) == 39
    # deploy and attention read only the window the models were trained on
    dep = tmp_path / "dep"
    assert main(["deploy", "--model", str(out), "--features", str(tmp_path / "features"), "--labels", str(labels),
                 "--out", str(dep), "--allow-overlap", "--bootstrap", "0", "--device", "cpu"]) == 1
    assert {r["window"] for r in _rows(dep / "attention.csv")} == {"abdomen"}
    n_rows = sum(len(b.features) // 2 for b in bags[1:])
    assert len(_rows(dep / "attention.csv")) == n_rows

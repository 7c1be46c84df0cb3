"""Data-efficiency curves: nested training shares, one held-out test set for every share, for crossval and
finetune3d."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from clearct.common.errors import ClearctError
from clearct.config import CrossvalConfig, Finetune3dConfig
from clearct.evaluate.curves import curve_splits, nested_shares
from clearct.mil.planted import planted_bags, write_planted_cohort
from clearct.workflows.curves import run_curve

sys.path.insert(0, str(Path(__file__).parent))
from volume_phantom import write_volume_cohort  # noqa: E402


def _training(splits) -> set[str]:
    return {p for j in splits.jobs for p in j.train + j.val + j.test}


def test_shares_are_nested_stratified_and_share_one_test_set():
    rng = np.random.default_rng(0)
    patients = [f"p{i:03d}" for i in range(100)]
    strat = rng.random((100, 3)) < [0.5, 0.3, 0.1]
    per_share = curve_splits(patients, strat, (0.1, 0.25, 0.5, 1.0), folds=5, seed=3, test_frac=0.2)
    holdouts = {tuple(s.holdout) for s in per_share.values()}
    assert len(holdouts) == 1 and len(holdouts.pop()) == 20  # the same 20 test patients for every share
    held = set(per_share[1.0].holdout)
    shares = sorted(per_share)
    for small, large in zip(shares, shares[1:]):
        assert _training(per_share[small]) < _training(per_share[large])  # strictly nested
    for share, s in per_share.items():
        train = _training(s)
        assert not train & held
        assert abs(len(train) - share * 80) <= 2, (share, len(train))
        assert set(s.unused) == set(patients) - held - train
        for j in s.jobs:  # the usual splits inside a share: no patient in two parts
            assert not (set(j.train) & set(j.val) or set(j.train) & set(j.test) or set(j.val) & set(j.test))
        pos = strat[[patients.index(p) for p in train]].mean(0)  # stratified: prevalences kept
        assert np.all(np.abs(pos - strat.mean(0)) < 0.12), (share, pos)
    assert per_share[0.1].folds == 4  # 8 patients: folds lowered to keep two per fold
    again = curve_splits(patients, strat, (0.1, 0.25, 0.5, 1.0), folds=5, seed=3, test_frac=0.2)
    assert all(again[k].jobs == per_share[k].jobs for k in per_share)  # same seed, same curve
    with pytest.raises(ClearctError, match="at least 4"):  # 10 patients: 8 to train on, 0.1 of them is 1
        curve_splits(patients[:10], strat[:10], (0.1, 1.0), folds=2, seed=0)
    with pytest.raises(ClearctError, match="shares must lie in"):
        nested_shares(patients, strat, (0.0, 1.0), seed=0)


def _read(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _check_run(out: Path, rows: list[dict], shares: tuple[float, ...]) -> None:
    assert sorted({r["share"] for r in rows}) == list(shares)
    assert {r["metric"] for r in rows} >= {"auroc"}
    assert len(_read(out / "curve.csv")) == len(rows) and (out / "curve.png").stat().st_size > 1000
    splits = {s: json.loads((out / f"share-{s:g}" / "splits.json").read_text()) for s in shares}
    assert len({tuple(sp["holdout"]) for sp in splits.values()}) == 1
    train = {s: {p for j in sp["jobs"] for p in j["train"] + j["val"] + j["test"]} for s, sp in splits.items()}
    assert train[shares[0]] < train[shares[1]]
    for s in shares:  # the run's held-out predictions are exactly the common test patients
        preds = {r["patient_id"] for r in _read(out / f"share-{s:g}" / "predictions.csv") if r["set"] == "holdout"}
        assert preds == set(splits[s]["holdout"])
        assert json.loads((out / f"share-{s:g}" / "compute.json").read_text())["total"]["flops"] > 0


@pytest.mark.slow
def test_curve_runs_crossval_and_finetune3d(tmp_path):
    bags = planted_bags(30, dim=8, instances=(4, 8), targets=1, shift=4.0, seed=0)
    labels = write_planted_cohort(tmp_path, bags)
    scans = write_volume_cohort(tmp_path, [(b.features.scan_id, b.features.patient_id) for b in bags],
                                [bool(b.labels[0]) for b in bags])
    shares = (0.5, 1.0)
    cv = CrossvalConfig(features=tmp_path / "features", labels=labels, targets=["t0"], folds=2, epochs=2,
                        min_steps=10, bootstrap=20, device="cpu", out=tmp_path / "unused")
    rows = run_curve("crossval", cv, tmp_path / "curve-cv", shares, test_frac=0.3)
    _check_run(tmp_path / "curve-cv", rows, shares)
    ft = Finetune3dConfig(scans=scans, labels=labels, targets=["t0"], folds=2, grid=[8, 16, 16], width=0.25,
                          epochs=1, bootstrap=20, device="cpu", out=tmp_path / "unused")
    rows = run_curve("finetune3d", ft, tmp_path / "curve-ft", shares, test_frac=0.3)
    _check_run(tmp_path / "curve-ft", rows, shares)
    # both families drew the same test patients and training shares from the same seed
    for s in shares:
        a = json.loads((tmp_path / "curve-cv" / f"share-{s:g}" / "splits.json").read_text())
        b = json.loads((tmp_path / "curve-ft" / f"share-{s:g}" / "splits.json").read_text())
        assert a == b

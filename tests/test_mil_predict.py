"""predict end to end: features from a real encoder (vit_conv_test) → crossval → one real DICOM scan."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from clearct.cli import main
from clearct.encoders import create_encoder
from clearct.encoders.embed import embed_volume
from clearct.io.features import write_features
from clearct.io.volume import CTVolume
from clearct.preprocess import parse_windows


@pytest.mark.slow
def test_predict_on_a_real_dicom_series(realct, tmp_path, capsys):
    encoder = create_encoder("vit_conv_test").eval()
    windows = parse_windows("lung,abdomen")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(10):
        hu = rng.integers(-1000, 400, size=(4, 48, 48)).astype(np.int16)
        hu[:, 16:32, 16:32] += 300 * (i % 2)  # a bright block in positive scans
        vol = CTVolume(hu=hu, spacing_mm=(2.0, 1.0, 1.0), z_mm=np.arange(4) * 2.0, scan_id=f"s{i}",
                       patient_id=f"p{i}", source="test", meta={})
        write_features(tmp_path / "feats" / f"s{i}.h5", embed_volume(vol, encoder, windows, device="cpu"))
        rows.append([f"p{i}", i % 2])
    with open(tmp_path / "labels.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["patient_id", "finding"], *rows])
    cv = tmp_path / "cv"
    assert main(["crossval", "--features", str(tmp_path / "feats"), "--labels", str(tmp_path / "labels.csv"),
                 "--targets", "finding", "--folds", "2", "--epochs", "2", "--min-steps", "10", "--bootstrap", "20",
                 "--device", "cpu", "--out", str(cv)]) == 0
    out = tmp_path / "pred"
    scan = realct / "totalsegmentator" / "example_ct_dicom"
    assert main(["predict", str(scan), "--model", str(cv), "--encoder", "vit_conv_test", "--out", str(out),
                 "--device", "cpu", "--top-k", "3"]) == 0
    result = json.loads((out / "prediction.json").read_text())
    assert 0.0 <= result["scores"]["finding"] <= 1.0
    assert result["slices"] == 20 and result["encoder"]["name"] == "vit_conv_test"
    assert [w[0] for w in result["encoder"]["windows"]] == ["lung", "abdomen"]
    assert result["model"]["models"] == ["fold-1", "fold-2"]
    assert (out / "attention.png").stat().st_size > 5000
    with open(out / "attention.csv") as fh:
        attn = list(csv.DictReader(fh))
    assert len(attn) == 40 and sum(float(r["attention"]) for r in attn) == pytest.approx(1.0, abs=1e-4)
    assert "finding" in capsys.readouterr().out

    # features from another encoder are refused with one line
    assert main(["predict", str(scan), "--model", str(cv), "--encoder", "mambaout_test", "--out", str(out),
                 "--device", "cpu"]) == 2
    assert "models were trained on vit_conv_test" in capsys.readouterr().err

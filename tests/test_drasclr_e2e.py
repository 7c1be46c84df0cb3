"""DrasCLR end to end through the commands' functions on files: synth cohort → ``run_pretrain`` (method drasclr)
→ run folder → ``run_extract --encoder RUN`` (patch features, resume) → ``run_crossval``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from clearct.common.runs import sha256_file
from clearct.config import CrossvalConfig, ExtractConfig, PretrainConfig, SynthConfig
from clearct.extract.run import run_extract
from clearct.io.features import read_features
from clearct.mil.crossval import run_crossval
from clearct.pretrain.train import run_pretrain
from clearct.synth import generate_cohort


@pytest.mark.slow
def test_drasclr_run_extracts_patch_features_that_resume_and_cross_validate(tmp_path):
    generate_cohort(SynthConfig(out=tmp_path / "cohort", patients=6, size=64, slices=16, format="nifti", workers=1),
                    progress=False)
    scans = tmp_path / "cohort" / "scans.csv"
    run = tmp_path / "run"
    pretrain = PretrainConfig(
        scans=scans, out=run, method="drasclr", epochs=1, batch_size=16, device="cpu",
        drasclr={"patch_size": 16, "voxel_mm": 4.0, "grid_mm": 48.0, "channels": [4, 8], "embed_dim": 16,
                 "proj_dim": 16, "experts": 4, "queue": 16, "location_bins": 1, "lr": 0.05},
    )
    assert run_pretrain(pretrain) == 0
    manifest = json.loads((run / "encoder.json").read_text())
    assert manifest["arch"] == "drasclr" and manifest["info"]["data"]["scans"] == 6

    feats = tmp_path / "feats"
    extract = ExtractConfig(scans=scans, encoder=str(run), out=feats, device="cpu", workers=1, batch_size=32)
    assert run_extract(extract) == 0
    files = sorted(feats.glob("*.h5"))
    assert len(files) == 6
    sha = sha256_file(run / "encoder.safetensors")
    for path in files:
        f = read_features(path)
        n = f.feats.shape[0]
        assert n > 1 and f.feats.shape[1] == 16 and np.isfinite(f.feats).all()
        assert f.encoder == "drasclr" and f.weights_sha256 == sha and f.attrs["instance_kind"] == "patch3d"
        centers = f.extra["patch_center_mm"]
        assert centers.shape == (n, 3) and np.allclose(f.z_mm, centers[:, 0])
        assert (np.diff(f.slice_index) >= 0).all() and len(np.unique(centers, axis=0)) == n
    before = {p.name: p.stat().st_mtime_ns for p in files}
    assert run_extract(extract) == 0  # a second run finds every file valid and skips it
    summary = json.loads((feats / "extract_summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 6, 0)
    assert {p.name: p.stat().st_mtime_ns for p in feats.glob("*.h5")} == before

    ids = [row["patient_id"] for row in csv.DictReader(scans.open())]
    (tmp_path / "labels.csv").write_text(
        "patient_id,y\n" + "".join(f"{pid},{i % 2}\n" for i, pid in enumerate(ids))
    )
    cv = CrossvalConfig(features=feats, labels=tmp_path / "labels.csv", targets=["y"], task="binary", folds=2,
                        epochs=2, min_steps=0, batch_size=2, bootstrap=0, out=tmp_path / "cv", device="cpu")
    assert run_crossval(cv) in (0, None)
    rows = list(csv.DictReader((tmp_path / "cv" / "predictions.csv").open()))
    assert sorted({r["patient_id"] for r in rows}) == sorted(ids)
    assert all(0.0 <= float(r["probability"]) <= 1.0 for r in rows)

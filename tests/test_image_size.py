"""The encoder input size end to end: pretrain at 96 px → extract → crossval → predict at 96 px; mismatches are
one-line errors; and the supervised ceiling learns on a tiny cohort (its features find lesion slices)."""

from __future__ import annotations

import json

import h5py
import pytest

from clearct.cli import main
from clearct.common.errors import ClearctError
from clearct.config import CrossvalConfig, DeployConfig, ExtractConfig, PretrainConfig, SynthConfig
from clearct.extract.run import run_extract
from clearct.inference.deploy import run_deploy
from clearct.mil.crossval import run_crossval
from clearct.pretrain.train import run_pretrain
from clearct.synth import generate_cohort
from clearct.synth.labels import LOCATIONS


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    generate_cohort(SynthConfig(out=out, patients=10, size=64, slices=12, format="nifti", scan_range="cap",
                                unannotated=0.0, lesion_contrast=4.0, lesion_size_mm=[40.0, 80.0], workers=1),
                    progress=False)
    return out


def _pretrain(cohort, out, **kw):
    cfg = {"scans": cohort / "scans.csv", "lesions": cohort / "lesions.csv", "arch": "resnet_tiny",
           "method": "lecl", "epochs": 1, "batch_size": 16, "image_size": 96, "workers": 0, "proj_dim": 16,
           "mlp_dim": 32, "device": "cpu", "out": out, "cache_dir": cohort / "cache"}
    assert run_pretrain(PretrainConfig(**{**cfg, **kw})) == 0
    return out


@pytest.mark.slow
def test_size_flows_from_pretraining_to_predict(cohort, tmp_path):
    run = _pretrain(cohort, tmp_path / "run")
    assert json.loads((run / "encoder.json").read_text())["input_size"] == 96
    feats = tmp_path / "feats"
    assert run_extract(ExtractConfig(scans=cohort / "scans.csv", encoder=str(run), out=feats, workers=0,
                                     device="cpu")) == 0
    with h5py.File(next(feats.glob("*.h5"))) as h5:
        assert int(h5.attrs["image_size"]) == 96
    # the run folder refuses another size unless asked for
    with pytest.raises(ClearctError, match="trained at 96 px, not 64 px"):
        run_extract(ExtractConfig(scans=cohort / "scans.csv", encoder=str(run), image_size=64, out=tmp_path / "x",
                                  workers=0, device="cpu"))
    cv = tmp_path / "cv"
    assert run_crossval(CrossvalConfig(features=feats, labels=cohort / "labels.csv", targets=list(LOCATIONS),
                                       folds=2, epochs=2, min_steps=4, bootstrap=20, out=cv, device="cpu")) == 0
    assert main(["predict", str(next((cohort / "scans").glob("*.nii.gz"))), "--model", str(cv), "--encoder",
                 str(run), "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    prediction = json.loads((tmp_path / "pred" / "prediction.json").read_text())
    assert prediction["encoder"]["image_size"] == 96
    # features of the same encoder at another size are refused by the models
    resized = tmp_path / "feats64"
    assert run_extract(ExtractConfig(scans=cohort / "scans.csv", encoder=str(run), image_size=64, allow_resize=True,
                                     out=resized, workers=0, device="cpu")) == 0
    with pytest.raises(ClearctError, match="embedded at 64 px but the models were trained on features at 96 px"):
        run_deploy(DeployConfig(model=cv, features=resized, labels=cohort / "labels.csv", out=tmp_path / "dep",
                                allow_overlap=True, bootstrap=20, device="cpu"))


def test_random_init_registry_encoder_extracts_at_the_asked_size(cohort, tmp_path):
    feats = tmp_path / "feats"
    assert main(["extract", "--scans", str(cohort / "scans.csv"), "--encoder", "random:resnet_tiny",
                 "--image-size", "80", "--out", str(feats), "--workers", "0", "--device", "cpu"]) == 0
    with h5py.File(next(feats.glob("*.h5"))) as h5:
        assert int(h5.attrs["image_size"]) == 80 and h5["feats"].shape[1] == 128


@pytest.mark.slow
def test_supervised_ceiling_learns_lesion_slices(cohort, tmp_path):
    """A short supervised run learns its per-slice targets: the exported trunk's frozen features, through the
    trained head (kept in the checkpoint), rank the slices a lesion covers above the others."""
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from clearct.io import read_lesions_table
    from clearct.io.features import read_features

    run = _pretrain(cohort, tmp_path / "sup", method="supervised", image_size=64, epochs=30, lr=2e-2,
                    lesion_share=0.5, batch_size=16)
    losses = [float(line.split(",")[2]) for line in (run / "pretrain-log.csv").read_text().splitlines()[1:]]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    state = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    weight, bias = state["head.weight"].numpy(), state["head.bias"].numpy()
    feats = tmp_path / "feats"
    run_extract(ExtractConfig(scans=cohort / "scans.csv", encoder=str(run), out=feats, workers=0, device="cpu"))
    covered = {(b.scan_id, z) for b in read_lesions_table(cohort / "lesions.csv")
               for z in range(b.extent[0], b.extent[1] + 1)}
    y, score = [], []
    for path in sorted(feats.glob("*.h5")):
        f = read_features(path)
        logits = f.feats.astype(np.float32) @ weight.T + bias
        y += [(f.scan_id, int(z)) in covered for z in f.slice_index]
        score += list(logits.max(axis=1))
    assert roc_auc_score(y, score) > 0.75  # chance: 0.5

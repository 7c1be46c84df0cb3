"""DrasCLR training on tiny in-memory phantoms: the loss falls, resuming is exact, patch features are valid h5."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from clearct.config import PretrainConfig
from clearct.encoders.drasclr.model import DrasCLREncoder
from clearct.encoders.drasclr.patches import plan_patches
from clearct.io.features import read_features, write_features
from clearct.pretrain.drasclr.train import CHECKPOINT, LOG_CSV, specs_from_config, train_drasclr
from drasclr_phantom import chest_phantom


def tiny_config(out, **kw) -> PretrainConfig:
    drasclr = {"patch_size": 16, "voxel_mm": 2.0, "grid_mm": 14.0, "channels": [4, 8], "embed_dim": 16,
               "proj_dim": 16, "experts": 4, "queue": 16, "location_bins": 1, "lr": 0.05, **kw.pop("drasclr", {})}
    settings = dict(scans=out / "scans.csv", out=out, method="drasclr", epochs=2, batch_size=8, device="cpu",
                    drasclr=drasclr)
    return PretrainConfig(**{**settings, **kw})


def plans(cfg, n, z=40):
    _, spec = specs_from_config(cfg)
    return [plan_patches(chest_phantom(z=z, seed=s), spec) for s in range(n)]


@pytest.mark.slow
def test_loss_falls_on_a_tiny_synthetic_run(tmp_path):
    cfg = tiny_config(tmp_path, epochs=6)
    train_drasclr(plans(cfg, 3), cfg)
    rows = list(csv.DictReader((tmp_path / LOG_CSV).read_text().splitlines()))
    losses = [float(r["loss"]) for r in rows]
    assert len(rows) == 6 and all(np.isfinite(losses))
    assert losses[-1] < losses[0] - 0.3, losses
    assert float(rows[-1]["neighbour"]) > 0 and float(rows[-1]["local"]) > 0


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))  # one thread count for both runs
    straight = train_drasclr(plans(tiny_config(tmp_path / "a"), 2, z=24), tiny_config(tmp_path / "a"))
    first = tiny_config(tmp_path / "b", epochs=1)
    train_drasclr(plans(first, 2, z=24), first)
    assert (tmp_path / "b" / CHECKPOINT).exists()
    resumed_cfg = tiny_config(tmp_path / "b", resume=True)
    resumed = train_drasclr(plans(resumed_cfg, 2, z=24), resumed_cfg)
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-6), name
    assert len(list(csv.DictReader((tmp_path / "b" / LOG_CSV).read_text().splitlines()))) == 2


def test_patch_embeddings_write_a_valid_feature_file(tmp_path):
    cfg = tiny_config(tmp_path)
    enc_spec, patch = specs_from_config(cfg)
    encoder = DrasCLREncoder(enc_spec, patch)
    vol = chest_phantom(seed=4)
    feats = encoder.embed_scan(vol, batch_size=5, device="cpu")
    n = len(plan_patches(vol, patch))
    path = write_features(tmp_path / "s4.h5", feats)
    back = read_features(path)
    assert back.feats.shape == (n, 16) and np.isfinite(back.feats).all()
    assert back.extra["patch_center_mm"].shape == (n, 3) and back.extra["patch_loc"].shape == (n, 3)
    assert (np.diff(back.slice_index) >= 0).all() and (back.window == 0).all()
    assert back.windows == [("lung", -1024.0, 240.0)] and back.image_size == 16
    assert np.allclose(back.z_mm, back.extra["patch_center_mm"][:, 0])
    assert back.scan_id == "s4" and back.patient_id == "p4" and back.attrs["instance_kind"] == "patch3d"
    # batching does not change the embeddings (eval mode: BatchNorm uses running statistics)
    one_batch = encoder.embed_scan(vol, batch_size=n, device="cpu")
    assert np.allclose(one_batch.feats, feats.feats, atol=1e-5)


@pytest.mark.slow
def test_crossval_runs_on_drasclr_patch_features(tmp_path):
    from clearct.config import CrossvalConfig
    from clearct.mil.crossval import run_crossval

    cfg = tiny_config(tmp_path)
    enc_spec, patch = specs_from_config(cfg)
    torch.manual_seed(0)
    encoder = DrasCLREncoder(enc_spec, patch)
    feats_dir = tmp_path / "feats"
    rows = ["patient_id,disease"]
    for s in range(8):
        vol = chest_phantom(z=24, seed=s)
        if s % 2:  # "disease": dense consolidation in the lower half of the lungs
            lower = np.zeros(vol.hu.shape, dtype=bool)
            lower[: vol.hu.shape[0] // 2] = True
            vol.hu[vol.meta["truth"] & lower] = -100
        write_features(feats_dir / f"{vol.scan_id}.h5", encoder.embed_scan(vol, device="cpu"))
        rows.append(f"{vol.patient_id},{s % 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    cv = CrossvalConfig(features=feats_dir, labels=tmp_path / "labels.csv", targets=["disease"], task="binary",
                        folds=2, epochs=3, min_steps=0, batch_size=4, bootstrap=0, out=tmp_path / "cv",
                        device="cpu")
    assert run_crossval(cv) in (0, None)
    predictions = (tmp_path / "cv" / "predictions.csv").read_text().splitlines()
    assert len(predictions) == 1 + 8 and all(f"p{s}" in "\n".join(predictions) for s in range(8))
    assert (tmp_path / "cv" / "metrics.csv").is_file()


def test_presets_fill_only_the_sizes_not_given(tmp_path):
    from clearct.pretrain.drasclr.train import PRESETS, resolve_preset

    cfg, name = resolve_preset(PretrainConfig(scans=tmp_path / "s.csv", out=tmp_path, method="drasclr",
                                              device="cpu", drasclr={"grid_mm": 50.0}))
    assert name == "cpu" and cfg.drasclr.preset == "cpu"  # auto without a GPU
    assert (cfg.batch_size, cfg.drasclr.patch_size, cfg.drasclr.channels) == (32, 16, [8, 16, 32])
    assert cfg.drasclr.grid_mm == 50.0  # given explicitly: kept
    paper, _ = resolve_preset(PretrainConfig(scans=tmp_path / "s.csv", out=tmp_path, method="drasclr",
                                             device="cpu", drasclr={"preset": "paper"}, batch_size=64))
    assert paper.batch_size == 64 and paper.drasclr.patch_size == 32 and paper.drasclr.voxel_mm == 1.0
    assert {k: getattr(paper.drasclr, k) for k in PRESETS["paper"] if k != "batch_size"} == {
        k: v for k, v in PRESETS["paper"].items() if k != "batch_size"}


def test_progress_lines_with_an_epoch_estimate_and_resume_refuses_other_settings(tmp_path, capsys):
    from clearct.common.errors import ClearctError
    from clearct.pretrain.drasclr.train import ESTIMATE_AFTER

    cfg = tiny_config(tmp_path, epochs=1, batch_size=4)
    scans = plans(cfg, 2, z=24)
    steps = sum(len(s) for s in scans) // 4
    assert steps > ESTIMATE_AFTER + 1
    train_drasclr(scans, cfg, progress_s=0.0)  # a line after every step
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("drasclr epoch 1/1 step")]
    assert len(lines) == steps and all("patches/s" in ln and "loss" in ln for ln in lines)
    assert "epoch ≈" not in lines[ESTIMATE_AFTER - 1] and "epoch ≈" in lines[ESTIMATE_AFTER]
    assert f"{steps} steps of 4 anchors (16 patches) per epoch" in err and "torch thread" in err
    with pytest.raises(ClearctError, match=r"--resume with different settings \(drasclr.grid_mm: 14.0 → 20.0"):
        train_drasclr(scans, tiny_config(tmp_path, epochs=2, batch_size=4, drasclr={"grid_mm": 20.0}, resume=True))


def test_a_long_step_still_gets_a_progress_line(capsys):
    import time

    from clearct.pretrain.drasclr.train import Progress

    with Progress(1, 2, 3, 16, every_s=0.05) as report:
        time.sleep(0.3)  # one step far longer than the line interval (the paper's sizes on a CPU)
        report.step(1, 1.5)
    err = capsys.readouterr().err
    assert "drasclr epoch 1/2 step 1/3 still running" in err
    assert "drasclr epoch 1/2 step 1/3: loss 1.5000" in err

"""End to end on a small synthetic cohort (CPU): LECL run + export + load, exact resume, CLI errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from clearct.cli import main
from clearct.common.errors import ClearctError
from clearct.config import PretrainConfig
from clearct.encoders import create_encoder
from clearct.pretrain.schedules import learning_rate, momentum
from clearct.pretrain.train import CHECKPOINT, LOG_CSV, run_pretrain
from cohort_files import pretrain_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return pretrain_cohort(tmp_path_factory.mktemp("cohort"))


def _cfg(cohort, out, **kw):
    base = {"scans": cohort / "scans.csv", "lesions": cohort / "lesions.csv", "arch": "vit_conv_test",
            "method": "lecl", "lam": 1.0, "epochs": 2, "batch_size": 8, "out": out,
            "workers": 0, "proj_dim": 16, "mlp_dim": 32, "warmup_epochs": 1, "log_every": 1, "device": "cpu",
            "windows": ["lung", "abdomen"], "cache_dir": cohort / "cache"}
    return PretrainConfig(**{**base, **kw})


@pytest.mark.slow
def test_lecl_two_epochs_export_loads_through_create_encoder(cohort, tmp_path):
    run = tmp_path / "run"
    code = main(["pretrain", "--scans", str(cohort / "scans.csv"), "--lesions", str(cohort / "lesions.csv"),
                 "--arch", "vit_conv_test", "--method", "lecl", "--lam", "3", "--epochs", "2", "--batch-size", "8",
                 "--image-size", "64", "--workers", "2", "--proj-dim", "16", "--mlp-dim", "32",
                 "--warmup-epochs", "1", "--log-every", "1", "--device", "cpu", "--out", str(run)])
    assert code == 0
    manifest = json.loads((run / "encoder.json").read_text())
    assert manifest["arch"] == "vit_conv_test"
    assert [w[0] for w in manifest["windows"]] == ["lung", "abdomen"]
    data = manifest["info"]["data"]
    assert data["scans"] == 3 and data["slices"] == 24 and data["lesion_slices"] > 0
    assert manifest["info"]["training"]["lam"] == 3.0 and manifest["info"]["method"] == "lecl"

    encoder = create_encoder(run)
    assert encoder.embed_dim == manifest["embed_dim"]
    # the exported weights are the query trunk of the last checkpoint
    trunk = {k[len("trunk."):]: v for k, v in
             torch.load(run / CHECKPOINT, weights_only=True)["model"].items() if k.startswith("trunk.")}
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, trunk[key], msg=key)
    fresh = create_encoder("vit_conv_test")
    assert any(not torch.equal(v, fresh.state_dict()[k]) for k, v in encoder.state_dict().items())
    with torch.no_grad():
        feats = encoder.eval()(torch.randn(2, 3, 64, 64))
    assert feats.shape == (2, encoder.embed_dim) and torch.isfinite(feats).all()

    with open(run / LOG_CSV) as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]  # 24 slices / 8 = 3 steps per epoch, 2 epochs
    for r in rows:  # lr and momentum follow the per-step schedules (value at the step's start)
        e = (int(r["step"]) - 1) / 3
        assert float(r["lr"]) == pytest.approx(learning_rate(e, base_lr=1e-4, batch_size=8, epochs=2,
                                                             warmup_epochs=1))
        assert float(r["momentum"]) == pytest.approx(momentum(e, m0=0.99, epochs=2))
        assert float(r["images_per_s"]) > 0 and torch.isfinite(torch.tensor(float(r["loss"])))


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run(cohort, tmp_path, monkeypatch):
    # the same thread count in all three runs (cpu_threads would follow the other test worker's load, and a
    # different count sums in another order: equal weights then differ in the last bit)
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_pretrain(_cfg(cohort, straight, method="moco", lesions=None))
    run_pretrain(_cfg(cohort, split, method="moco", lesions=None, stop_after=1))
    assert (split / CHECKPOINT).exists() and not (split / "encoder.safetensors").exists()
    assert torch.load(split / CHECKPOINT, weights_only=True)["epoch"] == 1
    run_pretrain(_cfg(cohort, split, method="moco", lesions=None, resume=True))
    a, b = load_file(straight / "encoder.safetensors"), load_file(split / "encoder.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(straight / CHECKPOINT, weights_only=True)
    cb = torch.load(split / CHECKPOINT, weights_only=True)
    assert ca["step"] == cb["step"] == 6
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    assert (straight / LOG_CSV).read_text().count("\n") == (split / LOG_CSV).read_text().count("\n") == 7
    manifest = (split / "encoder.json").read_text()
    run_pretrain(_cfg(cohort, split, method="moco", lesions=None, resume=True))  # finished: nothing to redo
    assert (split / "encoder.json").read_text() == manifest and '"final_loss": null' not in manifest


@pytest.mark.slow
def test_bad_settings_are_one_line_errors(cohort, tmp_path):
    with pytest.raises(ClearctError, match="needs --lesions"):
        run_pretrain(_cfg(cohort, tmp_path / "a", lesions=None))
    with pytest.raises(ClearctError, match="fewer than one batch of 32"):
        run_pretrain(_cfg(cohort, tmp_path / "b", batch_size=32))
    with pytest.raises(ClearctError, match="must be a multiple of 16"):
        run_pretrain(_cfg(cohort, tmp_path / "b", image_size=40))
    with pytest.raises(ClearctError, match="--method supervised needs --lesions"):
        run_pretrain(_cfg(cohort, tmp_path / "b", method="supervised", lesions=None))
    run_pretrain(_cfg(cohort, tmp_path / "c", method="moco", epochs=1, stop_after=1))
    with pytest.raises(ClearctError, match=r"--resume with different settings \(batch_size: 8 → 4\)"):
        run_pretrain(_cfg(cohort, tmp_path / "c", method="moco", epochs=1, batch_size=4, resume=True))


def test_short_runs_get_scaled_defaults_and_a_warning(cohort, tmp_path, caplog):
    from clearct.pretrain.train import resolve_defaults

    cfg = PretrainConfig(scans=cohort / "scans.csv", arch="vit_conv_test", method="moco", epochs=3, out=tmp_path)
    short = resolve_defaults(cfg, slices=6400, embed_dim=64)
    assert short.warmup_epochs == pytest.approx(0.3)  # a tenth of the run, not the paper's 10 epochs
    assert short.batch_size == 256 and short.mlp_dim == 1024
    assert resolve_defaults(cfg, slices=1000, embed_dim=768).batch_size == 32  # ≥ 16 steps per epoch
    assert resolve_defaults(cfg, slices=1000, embed_dim=768).mlp_dim == 4096
    assert resolve_defaults(cfg.model_copy(update={"epochs": 200}), slices=64, embed_dim=64).warmup_epochs == 10
    # an explicit warm-up that outlasts the run is kept, with a warning that names the consequence
    resolve_defaults(cfg.model_copy(update={"warmup_epochs": 3.0}), slices=6400, embed_dim=64)
    assert "never reaches its base value" not in caplog.text  # as long as the run: the base lr at the last step
    resolve_defaults(cfg.model_copy(update={"warmup_epochs": 10.0}), slices=6400, embed_dim=64)
    assert "never reaches its base value" in caplog.text


def test_supervised_ceiling_trains_exports_and_reloads(cohort, tmp_path):
    run = tmp_path / "sup"
    assert run_pretrain(_cfg(cohort, run, method="supervised", image_size=96, lesion_share=0.5)) == 0
    manifest = json.loads((run / "encoder.json").read_text())
    assert manifest["info"]["method"] == "supervised" and manifest["input_size"] == 96
    data = manifest["info"]["data"]
    assert data["labels"] and data["lesion_covered_slices"] >= data["lesion_slices"] > 0
    encoder = create_encoder(run)
    assert encoder.input_size == 96
    head = {k for k in torch.load(run / CHECKPOINT, weights_only=True)["model"] if k.startswith("head.")}
    assert head == {"head.weight", "head.bias"}  # the classifier stays in the checkpoint, not in the encoder
    assert not any(k.startswith("head.") for k in load_file(run / "encoder.safetensors"))
    with pytest.raises(ClearctError, match="trained at 96 px, not 64 px"):
        create_encoder(run, image_size=64)
    assert create_encoder(run, image_size=64, allow_resize=True).input_size == 64


@pytest.mark.slow
def test_snapshots_are_run_folders_of_the_weights_after_their_step(cohort, tmp_path, monkeypatch):
    """--snapshot-steps: step 6 of 6 is the final encoder itself, step 3 (the end of epoch 1) the trunk of the
    epoch-1 checkpoint; each loads through create_encoder; steps the run cannot export are refused up front."""
    from clearct.pretrain.train import snapshot_dir

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same summation order in both runs
    run, part = tmp_path / "run", tmp_path / "part"
    run_pretrain(_cfg(cohort, run, method="moco", lesions=None, snapshot_steps=[6, 3]))
    final = load_file(run / "encoder.safetensors")
    snaps = {n: load_file(snapshot_dir(run, n) / "encoder.safetensors") for n in (3, 6)}
    assert all(torch.equal(final[k], snaps[6][k]) for k in final)
    assert any(not torch.equal(snaps[3][k], snaps[6][k]) for k in final)
    run_pretrain(_cfg(cohort, part, method="moco", lesions=None, stop_after=1))
    epoch1 = torch.load(part / CHECKPOINT, weights_only=True)["model"]
    assert all(torch.equal(v, epoch1[f"trunk.{k}"]) for k, v in snaps[3].items())
    manifest = json.loads((snapshot_dir(run, 3) / "encoder.json").read_text())
    assert manifest["info"]["snapshot_step"] == 3 and manifest["info"]["steps"] == 6
    encoder = create_encoder(snapshot_dir(run, 3))
    assert all(torch.equal(v, snaps[3][k]) for k, v in encoder.state_dict().items())
    with pytest.raises(ClearctError, match=r"--snapshot-steps 7 lie beyond the run's 6 steps"):
        run_pretrain(_cfg(cohort, tmp_path / "far", method="moco", lesions=None, snapshot_steps=[2, 7]))
    with pytest.raises(ClearctError, match="--snapshot-steps 2 were passed before this resume"):
        run_pretrain(_cfg(cohort, part, method="moco", lesions=None, snapshot_steps=[2, 5], resume=True))

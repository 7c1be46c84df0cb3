"""finetune3d end to end on tiny volume cohorts: a planted sphere is learned and noise is not, the folds are
crossval's, the outputs are crossval's and deploy reads the models; compute.json; volume preparation; weights."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clearct.cli import main
from clearct.io.volume import CTVolume
from clearct.mil.planted import planted_bags, write_planted_cohort

sys.path.insert(0, str(Path(__file__).parent))
from volume_phantom import write_volume_cohort  # noqa: E402

FAST = ["--folds", "3", "--grid", "16,32,32", "--width", "0.25", "--epochs", "10", "--patience", "10", "--lr", "1e-3",
        "--bootstrap", "100", "--device", "cpu"]


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _header(path: Path) -> list[str]:
    with open(path) as fh:
        return next(csv.reader(fh))


def _metric(folder: Path, target: str, set_name: str = "cv", metric: str = "auroc") -> float:
    return next(float(r["value"]) for r in _rows(folder / "metrics.csv")
                if (r["set"], r["target"], r["metric"]) == (set_name, target, metric))


def _cohort(root: Path, n: int, seed: int, prefix: str = "") -> tuple[Path, Path]:
    """Feature bags and volumes of the same patients with one labels.csv: t0 = a bright sphere in the volume
    (and a planted signal in the bags), t1 = a label without any signal in the volume."""
    bags = planted_bags(n, dim=8, instances=(4, 8), targets=2, shift=4.0, seed=seed, prefix=prefix)
    labels = write_planted_cohort(root, bags)
    scans = write_volume_cohort(root, [(b.features.scan_id, b.features.patient_id) for b in bags],
                                [bool(b.labels[0]) for b in bags], seed=seed)
    return labels, scans


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ft3d")
    labels, scans = _cohort(root, 30, seed=0)
    ft, cv = root / "ft", root / "cv"
    assert main(["finetune3d", "--scans", str(scans), "--labels", str(labels), "--targets", "t0,t1", *FAST,
                 "--out", str(ft)]) == 0
    assert main(["crossval", "--features", str(root / "features"), "--labels", str(labels), "--targets", "t0,t1",
                 "--folds", "3", "--epochs", "2", "--min-steps", "20", "--bootstrap", "50", "--device", "cpu",
                 "--out", str(cv)]) == 0
    return {"root": root, "ft": ft, "cv": cv, "labels": labels, "scans": scans}


@pytest.mark.slow
def test_planted_sphere_is_learned_and_noise_is_not(runs):
    assert _metric(runs["ft"], "t0") > 0.85
    assert abs(_metric(runs["ft"], "t1") - 0.5) < 0.3


@pytest.mark.slow
def test_folds_are_crossvals_and_no_patient_is_in_two_parts(runs, tmp_path):
    ft = json.loads((runs["ft"] / "splits.json").read_text())
    assert ft == json.loads((runs["cv"] / "splits.json").read_text())  # same seed → identical patient-level folds
    tests = [set(j["test"]) for j in ft["jobs"]]
    assert sum(map(len, tests)) == len(set().union(*tests)) == 30
    for j in ft["jobs"]:
        assert not (set(j["train"]) & set(j["val"]) or set(j["train"]) & set(j["test"]) or set(j["val"]) & set(j["test"]))
        meta = json.loads((runs["ft"] / j["name"] / "model.json").read_text())
        assert (meta["train_patients"], meta["val_patients"]) == (j["train"], j["val"])
    # crossval's splits.json given explicitly (another seed would draw other folds): the same jobs
    out = tmp_path / "ft-splits"
    assert main(["finetune3d", "--scans", str(runs["scans"]), "--labels", str(runs["labels"]), "--targets", "t0",
                 *FAST, "--epochs", "1", "--seed", "5", "--splits", str(runs["cv"] / "splits.json"),
                 "--cache-dir", str(runs["ft"] / "volume-cache"), "--out", str(out)]) == 0
    assert json.loads((out / "splits.json").read_text())["jobs"] == ft["jobs"]


@pytest.mark.slow
def test_outputs_have_crossvals_columns_and_provenance(runs):
    for name in ("predictions.csv", "metrics.csv"):
        assert _header(runs["ft"] / name) == _header(runs["cv"] / name)
    assert {r["set"] for r in _rows(runs["ft"] / "predictions.csv")} == {"cv"}
    assert len(_rows(runs["ft"] / "predictions.csv")) == 30 * 2
    for ext in ("png", "svg"):
        assert (runs["ft"] / "plots" / f"cv-t0.{ext}").stat().st_size > 1000
    meta = json.loads((runs["ft"] / "fold-1" / "model.json").read_text())
    assert meta["kind"] == "finetune3d" and meta["settings"]["arch"] == "resnet10"
    assert meta["prep"]["grid"] == [16, 32, 32] and [w[0] for w in meta["prep"]["windows"]] == ["lung", "abdomen"]
    assert meta["task"]["targets"] == ["t0", "t1"] and len(meta["thresholds"]) == 2


@pytest.mark.slow
def test_deploy_reads_finetune3d_models(runs, tmp_path, capsys):
    ext = tmp_path / "ext"
    labels, scans = _cohort(ext, 12, seed=9, prefix="x")
    dep = tmp_path / "dep"
    assert main(["deploy", "--model", str(runs["ft"]), "--scans", str(scans), "--labels", str(labels),
                 "--bootstrap", "50", "--device", "cpu", "--out", str(dep)]) == 0
    assert _header(dep / "predictions.csv") == _header(runs["cv"] / "predictions.csv")
    assert json.loads((dep / "compute.json").read_text())["total"]["wall_s"] > 0
    assert _metric(dep, "t0", "deploy") > 0.8
    from clearct.finetune3d.train import infer
    from clearct.inference.ensembles import load_ensemble

    ens = load_ensemble(runs["ft"])
    assert ens.kind == "finetune3d" and len(ens.models) == 3
    items = {r["scan_id"]: float(r["probability"]) for r in _rows(dep / "predictions.csv") if r["target"] == "t0"}
    from clearct.common.failures import Issues
    from clearct.finetune3d.run import load_volume_items

    vols = load_volume_items(scans, None, None, ens.prep, cache_dir=tmp_path / "c", workers=0, issues=Issues())
    from clearct.modeling.tasks import scores_from_outputs

    single = np.mean([scores_from_outputs(ens.spec, infer(m, vols[:1], ens.prep, ens.device, 4)).numpy()
                      for m in ens.models], axis=0)
    assert items[vols[0].scan_id] == pytest.approx(float(single[0, 0]), abs=1e-5)
    # the training cohort is refused; features are not what these models read
    base = ["deploy", "--model", str(runs["ft"]), "--labels", str(runs["labels"]), "--device", "cpu"]
    assert main([*base, "--scans", str(runs["scans"]), "--out", str(tmp_path / "r")]) == 2
    assert "were used to train these models" in capsys.readouterr().err
    assert main([*base, "--features", str(runs["root"] / "features"), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scans" in err[0]
    assert main(["attention", "--model", str(runs["ft"]), "--features", str(runs["root"] / "features"),
                 "--out", str(tmp_path / "a"), "--device", "cpu"]) == 2
    assert "no slice attention" in capsys.readouterr().err


@pytest.mark.slow
def test_compute_json_is_plausible(runs):
    for folder, stage_names in ((runs["ft"], {"volumes", "fold-1", "fold-2", "fold-3"}),
                                (runs["cv"], {"fold-1", "fold-2", "fold-3"})):
        doc = json.loads((folder / "compute.json").read_text())
        total = doc["total"]
        assert total["wall_s"] > 0 and total["cpu_s"] > 0 and total["flops"] > 0 and total["steps"] > 0
        assert 50e6 < total["peak_rss_bytes"] < 64e9 and total["peak_rss_scope"] == "stage"
        assert total["peak_cuda_bytes"] is None and doc["host"]["device"] == "cpu"
        stages = {s["name"]: s for s in doc["stages"]}
        assert set(stages) == stage_names
        folds = [stages[f"fold-{k}"] for k in (1, 2, 3)]
        assert total["flops"] == sum(s["flops"] for s in folds)
        assert sum(s["wall_s"] for s in folds) <= total["wall_s"]
        for s in folds:
            assert s["flops"] > 0 and s["steps"] > 0 and s["peak_rss_bytes"] > 0 and not s["reused"]
    # a training step costs two to three forwards of its batch: backward ≈ 2 × forward, less the input gradient
    # of the first convolution (the largest layer here), which is never needed
    meta = json.loads((runs["ft"] / "fold-1" / "model.json").read_text())["compute"]
    assert 2.0 < meta["step_flops"] / (4 * meta["item_flops"]) < 3.0
    # the fold's FLOPs: its training steps, one validation pass per epoch + the threshold pass, its predictions
    fold = json.loads((runs["ft"] / "compute.json").read_text())["stages"][1]
    epochs = len(json.loads((runs["ft"] / "fold-1" / "model.json").read_text())["history"])
    expected = (meta["step_flops"] * meta["steps"]
                + meta["item_flops"] * (fold["val_patients"] * (epochs + 1) + fold["test_scans"]))
    assert fold["flops"] == expected
    # the cost of one more task: a full fine-tune against one MIL crossval on existing features
    from clearct.evaluate.efficiency import cost_markdown, one_more_task

    summary = one_more_task(mil=runs["cv"], finetune3d=runs["ft"])
    totals = [json.loads((runs[k] / "compute.json").read_text())["total"]["flops"] for k in ("ft", "cv")]
    assert summary["ratio_3d_over_clear"]["flops"] == pytest.approx(totals[0] / totals[1])
    assert "3D: one more task (finetune3d)" in cost_markdown(summary)


@pytest.mark.slow
def test_resume_reuses_the_fold_models(runs, tmp_path):
    before = (runs["ft"] / "predictions.csv").read_text()
    assert main(["finetune3d", "--scans", str(runs["scans"]), "--labels", str(runs["labels"]), "--targets", "t0,t1",
                 *FAST, "--out", str(runs["ft"])]) == 0
    assert (runs["ft"] / "predictions.csv").read_text() == before
    stages = json.loads((runs["ft"] / "compute.json").read_text())["stages"]
    folds = [s for s in stages if s["name"].startswith("fold-")]
    assert all(s["reused"] and s["flops"] is None and s["trained"]["flops"] > 0 for s in folds)
    from clearct.evaluate.efficiency import cost_of

    assert cost_of(runs["ft"], "ft")["flops"] == sum(s["trained"]["flops"] for s in folds)  # what training cost


@pytest.mark.slow
def test_calibrating_the_saved_networks_fits_only_their_maps(runs, tmp_path):
    import shutil

    ft = tmp_path / "ft"
    shutil.copytree(runs["ft"], ft)
    assert main(["finetune3d", "--scans", str(runs["scans"]), "--labels", str(runs["labels"]), "--targets", "t0,t1",
                 *FAST, "--out", str(ft), "--calibrate", "platt", "--cache-dir", str(runs["ft"] / "volume-cache")]) == 0
    stages = json.loads((ft / "compute.json").read_text())["stages"]
    assert all(s["reused"] for s in stages if s["name"].startswith("fold-"))  # no network trained again
    meta = json.loads((ft / "fold-1" / "model.json").read_text())
    assert meta["task"]["calibration"]["method"] == "platt" and len(meta["task"]["calibration"]["slope"]) == 2
    for target in ("t0", "t1"):
        assert (ft / "plots" / f"cv-{target}-calibration.png").stat().st_size > 1000
    old = {(r["target"], r["metric"]): r for r in _rows(runs["ft"] / "metrics.csv") if r["set"] == "cv"}
    new = {(r["target"], r["metric"]): r for r in _rows(ft / "metrics.csv") if r["set"] == "cv"}
    assert new[("t0", "auroc")]["fold_mean"] == old[("t0", "auroc")]["fold_mean"]  # every fold ranks as before
    assert ("t0", "ece") in new and ("macro", "brier") in new


@pytest.mark.slow
def test_bad_scans_are_reported_and_the_rest_goes_on(tmp_path, capsys):
    labels, scans = _cohort(tmp_path, 10, seed=2)
    (tmp_path / "volumes" / "s0001.npz").write_bytes(b"not an npz")
    with open(scans, "a") as fh:
        fh.write("stray,nobody,volumes/s0002.npz\n")
    text = labels.read_text().splitlines()
    labels.write_text("\n".join(text[:-1]) + "\n")  # the last patient loses its label row
    out = tmp_path / "ft"
    assert main(["finetune3d", "--scans", str(scans), "--labels", str(labels), "--targets", "t0", "--folds", "2",
                 "--grid", "8,16,16", "--width", "0.25", "--epochs", "1", "--bootstrap", "20", "--device", "cpu",
                 "--out", str(out)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "clearct: warning" in line]
    assert len(err) == 2 and any("s0001.npz" in line for line in err), err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scans_used"] == 8
    assert summary["issues"] == {"unreadable_scans": 1, "scans_without_labels": 2}


def test_bad_settings_are_one_line(tmp_path, capsys):
    labels, scans = _cohort(tmp_path, 4, seed=1)
    assert main(["finetune3d", "--scans", str(scans), "--labels", str(labels), "--targets", "t0", "--grid", "8,16",
                 "--out", str(tmp_path / "o")]) == 2
    assert "grid takes three sizes" in capsys.readouterr().err
    assert main(["finetune3d", "--scans", str(scans), "--labels", str(labels), "--targets", "nope",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "labels.csv" in err[0] and "nope" in err[0]


@pytest.mark.slow
def test_registry_matches_the_config_choices():
    from clearct.config import ARCHS_3D
    from clearct.finetune3d.models import ARCHS, build_net

    assert tuple(ARCHS) == ARCHS_3D
    x = torch.zeros(2, 2, 32, 32, 32)  # DenseNet121 halves the grid five times
    for arch in ("resnet10", "densenet121", "mc3_18"):
        net = build_net(arch, 2, 3, 0.25 if arch == "resnet10" else 1.0).eval()
        assert net(x).shape == (2, 3)
    from clearct.common.errors import ClearctError

    with pytest.raises(ClearctError, match="--width"):
        build_net("r3d_18", 2, 3, 0.5)
    from clearct.config import Finetune3dConfig
    from clearct.finetune3d.run import volume_settings

    base = {"scans": "s.csv", "labels": "l.csv", "targets": ["t"], "out": "o"}
    assert volume_settings(Finetune3dConfig(**base)).width == 0.5  # CPU-sized ResNet by default
    assert volume_settings(Finetune3dConfig(**base, arch="densenet121")).width == 1.0  # no width to scale
    assert volume_settings(Finetune3dConfig(**base, arch="resnet18", width=1.0)).width == 1.0


# --- volume preparation ----------------------------------------------------------------------------------------

def _box_volume(offset_vox: tuple[int, int, int], spacing=(2.0, 1.0, 1.0)) -> CTVolume:
    """Air with a 10×20×30 mm body block, its centre moved by ``offset_vox`` from the volume centre."""
    hu = np.full((40, 80, 80), -1000, np.int16)
    c = np.array([20, 40, 40]) + np.array(offset_vox)
    half = (np.array([10.0, 20.0, 30.0]) / np.array(spacing) / 2).astype(int)
    hu[c[0] - half[0]:c[0] + half[0], c[1] - half[1]:c[1] + half[1], c[2] - half[2]:c[2] + half[2]] = 50
    return CTVolume(hu, spacing, np.arange(40) * spacing[0])


def test_grid_is_centred_on_the_body_at_the_fixed_spacing():
    from clearct.finetune3d.volumes import VolumePrep, to_grid

    prep = VolumePrep((8, 16, 16), (2.0, 2.0, 2.0), (("abdomen", -175.0, 275.0),))
    for offset in ((0, 0, 0), (6, -15, 12)):
        g = to_grid(_box_volume(offset), prep)
        body = np.argwhere(g > -500)
        assert g.shape == (8, 16, 16) and g.dtype == np.int16
        centre = body.mean(0)
        assert np.allclose(centre, (np.array(g.shape) - 1) / 2, atol=0.6), (offset, centre)
        extent = body.max(0) - body.min(0) + 1  # 10 × 20 × 30 mm at 2 mm: 5 × 10 × 15 voxels (±1 for edges)
        assert np.all(np.abs(extent - np.array([5, 10, 15])) <= 1), extent


def test_fitted_grid_holds_the_whole_body_and_keeps_its_aspect():
    from clearct.finetune3d.volumes import VolumePrep, to_grid

    g = to_grid(_box_volume((3, 5, -7)), VolumePrep((8, 32, 32), None, (("lung", -1500.0, 500.0),)))
    body = np.argwhere(g > -500)
    lo, hi = body.min(0), body.max(0)
    assert lo.min() >= 0 and np.all(hi <= np.array(g.shape) - 1)
    assert hi[0] - lo[0] + 1 >= 7  # z fills the grid (less the margin)
    assert hi[2] - lo[2] + 1 >= 29  # the wider in-plane side fills it …
    y, x = hi[1] - lo[1] + 1, hi[2] - lo[2] + 1
    assert abs(y / x - 20 / 30) < 0.1  # … and the other keeps the 20:30 aspect


def test_backbone_weights_load_except_the_head_and_the_first_conv_is_adapted(tmp_path):
    from safetensors.torch import save_file

    from clearct.common.errors import ClearctError
    from clearct.finetune3d.models import build_net, load_backbone

    src = build_net("resnet10", 1, 7, 0.25)  # a 1-channel checkpoint with its own classifier, saved as DDP does
    path = tmp_path / "medicalnet.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in src.state_dict().items()}, str(path))
    net = build_net("resnet10", 2, 3, 0.25)
    head = net.fc.weight.detach().clone()
    digest = load_backbone(net, "resnet10", path)
    assert len(digest) == 64
    assert torch.equal(net.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    assert torch.allclose(net.conv1.weight, src.conv1.weight.repeat(1, 2, 1, 1, 1) / 2)
    assert torch.equal(net.fc.weight, head) and net.fc.out_features == 3
    x = torch.rand(1, 1, 16, 32, 32)
    net.eval(), src.eval()
    with torch.no_grad():  # the same image in both channels: the adapted first layer responds as the original
        assert torch.allclose(net.bn1(net.conv1(x.repeat(1, 2, 1, 1, 1))), src.bn1(src.conv1(x)), atol=1e-5)
    with pytest.raises(ClearctError, match="weights do not fit"):
        load_backbone(build_net("resnet18", 2, 3, 0.25), "resnet18", path)

"""compute.json: per-stage peaks that are each stage's own, summed FLOPs, and FLOP counts that match hand counts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from clearct.common import compute

STAGES = """
import json, sys
import numpy as np, torch
from clearct.common import compute
out = sys.argv[1]
compute.begin_run(out, "test")
with compute.stage(out, "big") as big:
    block = np.ones(300 * 2**20 // 8)  # 300 MiB touched
    del block
    big.flops, big.steps = 10, 2
with compute.stage(out, "small") as small:
    sum(range(1000))
    small.flops, small.steps = 5, 1
print(json.dumps(compute.finish_run(out, device=torch.device("cpu"))))
"""


@pytest.mark.slow
def test_stage_peaks_are_their_own_and_the_run_sums_them(tmp_path):
    # in a fresh process: a test worker that already holds gigabytes can serve the block from memory it keeps
    run = subprocess.run([sys.executable, "-c", STAGES, str(tmp_path)], capture_output=True, text=True, check=True)
    doc = json.loads(run.stdout.strip().splitlines()[-1])
    assert json.loads((tmp_path / "compute.json").read_text()) == doc
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["big"]["peak_rss_scope"] == "stage"  # Linux: the high-water mark is reset per stage
    assert stages["big"]["peak_rss_bytes"] - stages["small"]["peak_rss_bytes"] > 250 * 2**20
    assert doc["total"]["peak_rss_bytes"] >= stages["big"]["peak_rss_bytes"]
    assert doc["total"]["flops"] == 15 and doc["total"]["steps"] == 3
    assert doc["total"]["wall_s"] >= stages["big"]["wall_s"] + stages["small"]["wall_s"]
    assert doc["command"] == "test" and doc["host"]["device"] == "cpu" and doc["host"]["cpus"] >= 1


def test_flop_counts_match_hand_counts_and_leave_the_model_alone():
    net = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 4))
    net.train()
    x = torch.randn(8, 32)
    forward = 2 * 8 * (32 * 16 + 16 * 4)
    assert compute.count_flops(lambda: net(x)) == forward
    stats = net[1].running_mean.clone()
    # backward: weight gradients of both layers + the input gradient of the second (the input needs none)
    assert compute.step_flops(net, lambda m: m(x)) == forward + 2 * 8 * (32 * 16 + 16 * 4) + 2 * 8 * 16 * 4
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(net[1].running_mean, stats)  # the probe ran on a copy


@pytest.mark.slow
def test_pretrain_and_extract_write_compute_json(tmp_path):
    from clearct.cli import main
    from clearct.encoders import create_encoder
    from cohort_files import pretrain_cohort

    pretrain_cohort(tmp_path / "c")
    run, feats = tmp_path / "run", tmp_path / "feats"
    assert main(["pretrain", "--scans", str(tmp_path / "c" / "scans.csv"), "--lesions", str(tmp_path / "c" / "lesions.csv"),
                 "--arch", "vit_conv_test", "--method", "lecl", "--epochs", "1", "--batch-size", "8",
                 "--image-size", "64", "--workers", "0", "--proj-dim", "16", "--mlp-dim", "32",
                 "--warmup-epochs", "0", "--device", "cpu", "--out", str(run)]) == 0
    assert main(["extract", "--scans", str(tmp_path / "c" / "scans.csv"), "--encoder", str(run), "--workers", "0",
                 "--device", "cpu", "--out", str(feats)]) == 0
    encoder = create_encoder(run).eval()
    with torch.no_grad():
        image = compute.count_flops(lambda: encoder(torch.zeros(1, 3, 64, 64)))  # one slice, one window

    pre = json.loads((run / "compute.json").read_text())
    assert pre["command"] == "pretrain" and pre["total"]["steps"] == 3  # 24 slices / batch 8
    assert pre["total"]["wall_s"] > 0 and pre["total"]["cpu_s"] > 0 and pre["total"]["peak_rss_bytes"] > 50e6
    # a MoCo step: two query views forward + backward (≈ 3 forwards each) and two momentum-view forwards,
    # per image of the batch ≈ 8 trunk forwards (+ the small heads, − the stem's unneeded input gradient)
    per_image = pre["total"]["flops"] / (3 * 8)
    assert 6.5 < per_image / image < 10, per_image / image

    ext = json.loads((feats / "compute.json").read_text())
    assert ext["command"] == "extract" and ext["total"]["steps"] == 3 * 8 * 2  # rows: slices × windows
    assert ext["total"]["flops"] == pytest.approx(48 * image, rel=1e-6)  # counted on the first scan, × rows
    assert ext["scans"] == 3

"""Two torchrun "nodes" on one machine (``--nnodes 2``, two launches, one rank each) give the one-process result:
pretraining the same weights, extraction the same features (what a multi-node Slurm job runs, docs/scale.md)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clearct.io.features import read_features
from cohort_files import pretrain_cohort

ENV = {k: v for k, v in os.environ.items()
       if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_process(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "clearct", *args], env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def _two_nodes(args: list[str]) -> None:
    """One torchrun launch per node, as ``srun`` starts them: static rendezvous at node 0's address."""
    port = _port()
    launches = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank",
         str(node), "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "clearct", *args],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    for node, p in enumerate(launches):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, f"node {node}: {err[-2000:]}"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return pretrain_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.mark.slow
def test_two_nodes_pretrain_and_extract_like_one_process(cohort, tmp_path):
    pretrain = ["pretrain", "--scans", str(cohort / "scans.csv"), "--arch", "vit_conv_test", "--method", "moco",
                "--epochs", "1", "--batch-size", "8", "--image-size", "64", "--workers", "0", "--proj-dim", "16",
                "--mlp-dim", "32", "--warmup-epochs", "1", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    _one_process([*pretrain, "--out", str(tmp_path / "one")])
    _two_nodes([*pretrain, "--out", str(tmp_path / "two")])
    one, two = (load_file(tmp_path / run / "encoder.safetensors") for run in ("one", "two"))
    assert one.keys() == two.keys()
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-5, msg=key)

    extract = ["extract", "--scans", str(cohort / "scans.csv"), "--encoder", str(tmp_path / "one"), "--windows",
               "abdomen", "--workers", "1", "--device", "cpu"]
    _one_process([*extract, "--out", str(tmp_path / "feats-one")])
    _two_nodes([*extract, "--out", str(tmp_path / "feats-two")])
    names = sorted(p.name for p in (tmp_path / "feats-one").glob("*.h5"))
    assert len(names) == 3 and names == sorted(p.name for p in (tmp_path / "feats-two").glob("*.h5"))
    for name in names:
        a, b = read_features(tmp_path / "feats-one" / name), read_features(tmp_path / "feats-two" / name)
        assert np.allclose(a.feats, b.feats, atol=1e-5) and np.array_equal(a.slice_index, b.slice_index)

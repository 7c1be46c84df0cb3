"""Kill tests: ``kill -9`` a real ``clearct extract`` / ``clearct pretrain`` process mid-run, run the same command
again, and the outputs equal those of an uninterrupted run — nothing half-written is left or reused."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clearct.io.features import read_features
from cohort_files import DRASCLR, drasclr_scans, nifti, scans_table

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: fast on shared cores, and the same in every run


def clearct(args: list) -> list[str]:
    return [sys.executable, "-m", "clearct", *map(str, args)]


def kill_when(args: list, ready, timeout: float = 240.0) -> None:
    """Start the command, SIGKILL it as soon as ``ready()`` holds, and check it really died mid-run."""
    proc = subprocess.Popen(clearct(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("the run never reached the point to kill it at")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    proc.stderr.close()


def run_to_end(args: list) -> None:
    proc = subprocess.run(clearct(args), capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file()]


@pytest.mark.slow
def test_extract_killed_and_rerun_equals_an_uninterrupted_run(tmp_path):
    table = scans_table(tmp_path / "scans.csv", [(f"s{i}", f"p{i}", nifti(tmp_path / f"s{i}.nii.gz", z=24, seed=i,
                                                                           size=48)) for i in range(10)])

    def command(out: Path) -> list:
        return ["extract", "--scans", table, "--encoder", "vit_conv_test", "--out", out,
                "--workers", "0", "--device", "cpu"]

    run_to_end(command(tmp_path / "reference"))
    out = tmp_path / "killed"
    kill_when(command(out), lambda: len(list(out.glob("*.h5"))) >= 2)
    written = sorted(out.glob("*.h5"))
    assert 2 <= len(written) < 10
    for path in written:  # every file that exists after the kill is complete
        read_features(path)
    (out / ".s9.h5.abcd1234.h5.tmp").write_bytes(b"half a feature file")  # as if killed inside a write

    run_to_end(command(out))  # the same command again
    assert not temporaries(out)
    for i in range(10):
        a, b = read_features(tmp_path / "reference" / f"s{i}.h5"), read_features(out / f"s{i}.h5")
        assert np.array_equal(a.feats, b.feats) and np.array_equal(a.z_mm, b.z_mm), f"s{i}"
    summary = (out / "extract_summary.json").read_text()
    assert f'"skipped": {len(written)}' in summary and f'"done": {10 - len(written)}' in summary


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "encoder.safetensors"), load_file(b / "encoder.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def _log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_drasclr_pretraining_killed_and_rerun_equals_an_uninterrupted_run(tmp_path):
    table = drasclr_scans(tmp_path)

    def command(out: Path) -> list:
        return ["pretrain", "--scans", table, *DRASCLR, "--drasclr-grid-mm", "10", "--epochs", "4", "--resume",
                "--out", out]

    run_to_end(command(tmp_path / "reference"))
    out = tmp_path / "killed"
    kill_when(command(out), lambda: (out / "drasclr-checkpoint.pt").exists())  # after epoch 1
    assert not (out / "encoder.json").exists()

    run_to_end(command(out))  # the same command again: continues from the checkpoint
    assert not temporaries(out)
    _same_weights(tmp_path / "reference", out)
    reference, resumed = _log(tmp_path / "reference" / "drasclr-log.csv"), _log(out / "drasclr-log.csv")
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference] and len(resumed) == 4


@pytest.mark.slow
def test_moco_pretraining_killed_and_rerun_equals_an_uninterrupted_run(tmp_path):
    table = scans_table(tmp_path / "scans.csv", [(f"m{i}", f"p{i}", nifti(tmp_path / f"m{i}.nii.gz", z=8, seed=i,
                                                                           size=40)) for i in range(3)])

    def command(out: Path) -> list:
        return ["pretrain", "--scans", table, "--arch", "vit_conv_test", "--method", "moco",
                "--epochs", "3", "--batch-size", "8", "--warmup-epochs", "1", "--mlp-dim", "32", "--proj-dim", "16",
                "--workers", "0", "--device", "cpu", "--resume", "--out", out]

    run_to_end(command(tmp_path / "reference"))
    out = tmp_path / "killed"
    kill_when(command(out), lambda: (out / "checkpoint.pt").exists())  # after epoch 1
    assert not (out / "encoder.json").exists()

    (out / ".checkpoint.pt.abcd1234.pt").write_bytes(b"half a checkpoint")  # as if killed inside a save
    run_to_end(command(out))
    assert not list(out.glob(".checkpoint.pt.*"))
    _same_weights(tmp_path / "reference", out)
    assert [r["loss"] for r in _log(out / "pretrain-log.csv")] == [
        r["loss"] for r in _log(tmp_path / "reference" / "pretrain-log.csv")]

"""clearct extract: h5 contract, equality with a one-slice-at-a-time reference, resume, failures, torchrun shards."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from clearct.cli import main
from clearct.common.prefetch import background, read_ahead
from clearct.encoders.embed import embed_volume, render_chunks
from clearct.io import CTVolume, read_ct
from clearct.io.features import read_features
from clearct.preprocess import parse_windows, render_slices

ENCODER = "vit_conv_test"


def _phantom_nifti(path: Path, seed: int, z: int) -> None:
    rng = np.random.default_rng(seed)
    hu = rng.normal(-700, 300, size=(40, 40, z)).astype(np.int16)  # (x, y, z) voxel order of NIfTI
    hu[10:30, 12:28, :] = 40 + 20 * seed
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])  # LPS-like axes: the reader reorients to the contract
    nib.save(nib.Nifti1Image(hu, affine), path)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    rows = []
    for i, z in enumerate([5, 7, 4]):
        _phantom_nifti(root / f"s{i}.nii.gz", i, z)
        rows.append((f"s{i}", f"p{i}", f"s{i}.nii.gz"))
    rng = np.random.default_rng(9)
    np.savez(
        root / "s3.npz", hu=rng.integers(-1000, 500, size=(6, 36, 44)).astype(np.int16), spacing=[3, 1, 1]
    )
    rows.append(("s3", "p3", "s3.npz"))
    with open(root / "scans.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("scan_id", "patient_id", "path"), *rows])
    return root / "scans.csv"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Fixed weights for the test encoder, so separate processes embed with the same network."""
    from safetensors.torch import save_file

    from clearct.encoders import create_encoder

    path = tmp_path_factory.mktemp("weights") / "vit_conv_test.safetensors"
    save_file({k: v.contiguous() for k, v in create_encoder(ENCODER).state_dict().items()}, path)
    return path


def _with_corrupt(cohort: Path, tmp_path: Path) -> Path:
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b not really a gzip NIfTI")
    table = tmp_path / "scans.csv"
    lines = cohort.read_text().splitlines()
    body = [",".join([*r.split(",")[:2], str(cohort.parent / r.split(",")[2])]) for r in lines[1:]]
    table.write_text("\n".join([lines[0], *body[:2], "bad,pbad,bad.nii.gz", *body[2:]]) + "\n")
    return table


def _check_contract(path: Path, n_slices: int, windows: list[str], sha: str = "random-init") -> None:
    f = read_features(path)
    w = len(windows)
    assert f.feats.shape[0] == n_slices * w and f.feats.dtype == np.float32
    assert np.array_equal(f.slice_index, np.repeat(np.arange(n_slices), w))
    assert np.array_equal(f.window, np.tile(np.arange(w), n_slices))
    assert [name for name, _, _ in f.windows] == windows
    for k in range(w):
        assert np.all(np.diff(f.z_mm[f.window == k]) > 0)
    assert f.encoder == ENCODER and f.weights_sha256 == sha and f.image_size == 64


def _reference(volume: CTVolume, encoder: torch.nn.Module, windows: list[str]) -> np.ndarray:
    """The authors' approach: one slice in one window per forward pass."""
    rows = []
    with torch.inference_mode():
        for s in range(volume.hu.shape[0]):
            for window in parse_windows(windows):
                x = render_slices(
                    volume.hu[s : s + 1], [window], encoder.input_size, mean=encoder.mean, std=encoder.std
                )
                rows.append(encoder(x[:, 0]))
    return torch.cat(rows).numpy()


@pytest.mark.slow
def test_extract_cohort_contract_resume_failures(cohort, weights, tmp_path, capsys):
    from clearct.common.runs import sha256_file
    from clearct.encoders import create_encoder

    scans = _with_corrupt(cohort, tmp_path)
    out = tmp_path / "feats"
    args = ["extract", "--scans", str(scans), "--encoder", ENCODER, "--weights", str(weights)]
    args += ["--out", str(out), "--batch-size", "4"]
    assert main(args) == 1  # the corrupt scan fails, the others complete
    failures = list(csv.DictReader((out / "failures.csv").read_text().splitlines()))
    assert [f["scan_id"] for f in failures] == ["bad"] and "bad.nii.gz" in failures[0]["reason"]
    assert "1 failed" in capsys.readouterr().out
    encoder = create_encoder(ENCODER, weights=weights).eval()
    sha = sha256_file(weights)
    for scan_id, n in [("s0", 5), ("s1", 7), ("s2", 4), ("s3", 6)]:
        _check_contract(out / f"{scan_id}.h5", n, ["lung", "abdomen"], sha)
    volume = read_ct(cohort.parent / "s1.nii.gz")
    assert np.allclose(
        read_features(out / "s1.h5").feats, _reference(volume, encoder, ["lung", "abdomen"]), atol=1e-5
    )
    summary = json.loads((out / "extract_summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"], summary["slices"]) == (4, 0, 1, 22)

    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    assert main(args) == 1  # second run: the valid files are skipped, the bad scan is retried
    summary = json.loads((out / "extract_summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 4, 1)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}

    assert main([*args, "--windows", "lung"]) == 2  # other settings: an error that suggests --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    assert main([*args, "--windows", "lung", "--overwrite"]) == 1
    _check_contract(out / "s0.h5", 5, ["lung"], sha)


def test_extract_realct(realct, tmp_path):
    scans = tmp_path / "scans.csv"
    dicom = realct / "totalsegmentator" / "example_ct_dicom"
    nifti = realct / "totalsegmentator" / "example_ct_sm.nii.gz"
    scans.write_text(f"scan_id,patient_id,path\nts_dicom,ts,{dicom}\nts_nifti,ts2,{nifti}\n")
    out = tmp_path / "feats"
    assert (
        main(["extract", "--scans", str(scans), "--encoder", ENCODER, "--out", str(out), "--workers", "1"])
        == 0
    )
    _check_contract(out / "ts_dicom.h5", 20, ["lung", "abdomen"])
    _check_contract(out / "ts_nifti.h5", 30, ["lung", "abdomen"])
    f = read_features(out / "ts_dicom.h5")
    assert np.allclose(f.z_mm[::2], np.arange(-804.5, -766.0, 2.0))
    assert (f.scan_id, f.patient_id) == ("ts_dicom", "ts")


@pytest.mark.slow
def test_two_torchrun_ranks_match_single_process(cohort, weights, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    common = [
        "extract",
        "--scans",
        str(cohort),
        "--encoder",
        ENCODER,
        "--weights",
        str(weights),
        "--windows",
        "abdomen",
    ]
    assert main([*common, "--out", str(single)]) == 0
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "clearct", *common, "--out", str(sharded)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    written = [
        line.split("wrote ")[1].split()[0]
        for line in (sharded / "extract.log").read_text().splitlines()
        if "wrote " in line
    ]
    assert sorted(written) == ["s0", "s1", "s2", "s3"]  # every scan exactly once
    ranks = {
        line.split("rank ")[1][0]
        for line in (sharded / "extract.log").read_text().splitlines()
        if "wrote " in line
    }
    assert ranks == {"0", "1"}
    for scan_id in ["s0", "s1", "s2", "s3"]:
        a, b = read_features(single / f"{scan_id}.h5"), read_features(sharded / f"{scan_id}.h5")
        assert np.allclose(a.feats, b.feats, atol=1e-5) and np.array_equal(a.z_mm, b.z_mm)
    summary = json.loads((sharded / "extract_summary.json").read_text())
    assert (summary["done"], summary["world_size"]) == (4, 2)


class _Tiny3D(torch.nn.Module):
    """A minimal 3D encoder: the volume path of embed_volume (one row, slice_index −1)."""

    embed_dim, input_size, is_3d, encoder_name, weights_sha256 = 4, 16, True, "tiny3d", "random-init"
    mean, std, hu_window = (0.0,) * 3, (1.0,) * 3, (-1000.0, 1000.0)

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(1, 4)

    def prepare_volume(self, volume: CTVolume) -> torch.Tensor:
        return torch.from_numpy(volume.hu).float()[None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(1, 2, 3, 4))[:, None])


def test_embed_volume_3d_gives_one_row():
    vol = CTVolume(hu=np.zeros((5, 8, 8), np.int16), spacing_mm=(2, 1, 1), z_mm=np.arange(5) * 2.0)
    f = embed_volume(vol, _Tiny3D(), "lung,abdomen")
    assert f.feats.shape == (1, 4) and f.slice_index.tolist() == [-1] and f.z_mm.tolist() == [4.0]
    assert f.windows == [("volume", -1000.0, 1000.0)]


def test_render_chunks_bound_the_rows():
    from clearct.encoders import create_encoder

    encoder = create_encoder(ENCODER)
    hu = np.zeros((10, 20, 20), np.int16)
    chunks = list(render_chunks(hu, parse_windows("lung,abdomen"), encoder, rows=6))
    assert [c.shape[0] for c in chunks] == [6, 6, 6, 2]
    assert chunks[0].shape[1:] == (3, encoder.input_size, encoder.input_size)


def test_background_and_read_ahead():
    assert list(background(iter(range(7)), depth=2)) == list(range(7))

    def boom():
        yield 1
        raise ValueError("producer failed")

    with pytest.raises(ValueError, match="producer failed"):
        list(background(boom()))
    before = threading.active_count()
    for item in background(iter(range(1000)), depth=1):
        if item == 3:
            break
    assert threading.active_count() == before  # an early stop joins the producer thread

    def read(i: int) -> int:
        if i == 2:
            raise OSError("unreadable")
        return i * 10

    got = list(read_ahead(read, range(5), workers=2))
    assert [i for i, _ in got] == [0, 1, 2, 3, 4]
    assert isinstance(got[2][1], OSError) and [r for _, r in got if not isinstance(r, Exception)] == [
        0,
        10,
        30,
        40,
    ]
    assert [r for _, r in read_ahead(lambda i: i + 1, [1, 2], workers=0)] == [2, 3]

"""The bad-input corpus: every command fed broken, truncated, mismatched or hostile input, through the CLI.

Each case checks what a user sees: the exit code, one clear line that names the culprit (file, scan, column),
no traceback, nothing half-written (no temporary files, no output for a refused input), and, for batch commands,
the rest of the batch done. Real files throughout: DICOM written with pydicom, PNG with Pillow, NIfTI with nibabel,
h5 with the project's writer; the disk-full and read-only cases run the CLI in a real subprocess.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest
from PIL import Image

from clearct.cli import main
from clearct.io.features import ScanFeatures, write_features
from cohort_files import DRASCLR, drasclr_scans, nifti, scans_table
from ct_dicom import rewrite, write_series, write_slice

ENCODER = "vit_conv_test"  # 64-d, 64 px: real forwards in milliseconds
DIM = 64
WINDOWS = [("lung", -1500.0, 500.0), ("abdomen", -175.0, 275.0)]
FAST_CV = ["--folds", "2", "--epochs", "1", "--min-steps", "0", "--batch-size", "2", "--bootstrap", "0",
           "--device", "cpu"]


# ---------------------------------------------------------------------------------------------------------- helpers

def run(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def error_line(err: str, *culprits: str) -> str:
    """The one ``clearct …: error:`` line of ``err``; it must name every culprit and no traceback may appear."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(lines) == 1, err
    for culprit in culprits:
        assert culprit in lines[0], (culprit, lines[0])
    return lines[0]


def failure_lines(err: str, command: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if ln.startswith(f"clearct {command}: ") and " failed: " in ln]


TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}(\.[A-Za-z0-9]+)+$")  # atomic_path: .<target>.<8 random><suffix>


def leftovers(folder: Path) -> list[Path]:
    """Temporary files of atomic writes anywhere below ``folder``."""
    return [p for p in folder.rglob(".*") if p.is_file() and TEMPORARY.match(p.name)]


def failures_csv(folder: Path) -> list[dict[str, str]]:
    with open(folder / "failures.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def stored(z: int = 4, y: int = 12, x: int = 10) -> np.ndarray:
    rng = np.random.default_rng(z)
    return rng.integers(0, 1500, size=(z, y, x)).astype(np.int16)


def features(folder: Path, scan_id: str, patient_id: str, *, n: int = 6, seed: int = 0, encoder: str = ENCODER,
             dim: int = DIM, signal_: float = 0.0) -> Path:
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n * 2, dim)).astype(np.float32) + signal_
    f = ScanFeatures(feats=feats, slice_index=np.repeat(np.arange(n), 2), z_mm=np.repeat(np.arange(n) * 2.0, 2),
                     window=np.tile([0, 1], n), scan_id=scan_id, patient_id=patient_id, encoder=encoder,
                     weights_sha256="random-init", image_size=64, windows=WINDOWS)
    return write_features(folder / f"{scan_id}.h5", f)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """8 patients' feature files (vit_conv_test, random-init), labels, a trained crossval folder, 3 NIfTI scans."""
    root = tmp_path_factory.mktemp("cohort")
    rows = ["patient_id,finding,grade"]
    for i in range(8):
        features(root / "feats", f"s{i}", f"p{i}", seed=i, signal_=0.5 * (i % 2))
        rows.append(f"p{i},{i % 2},{'abc'[i % 3]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    assert main(["crossval", "--features", str(root / "feats"), "--labels", str(root / "labels.csv"),
                 "--targets", "finding", "--task", "binary", *FAST_CV, "--out", str(root / "cv")]) == 0
    for i in range(3):
        nifti(root / f"n{i}.nii.gz", z=4 + i, seed=i)
    return root


def copy_feats(cohort: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "feats"
    shutil.copytree(cohort / "feats", dst)
    return dst


# ----------------------------------------------------------------------------------------- readers (clearct info)

def test_dicom_without_positions_and_nothing_to_order_by(tmp_path, capsys):
    write_series(tmp_path / "sc", stored(3))
    rewrite(tmp_path / "sc", "ImagePositionPatient", InstanceNumber=1)
    code, _, err = run(capsys, "info", tmp_path / "sc")
    assert code == 2
    error_line(err, str(tmp_path / "sc"), "ImagePositionPatient")


def test_dicom_without_positions_read_by_slice_location_with_a_warning(tmp_path, capsys):
    write_series(tmp_path / "loc", stored(3))
    rewrite(tmp_path / "loc", "ImagePositionPatient", SliceLocation=lambda ds: ds.ImagePositionPatient[2])
    code, out, err = run(capsys, "info", tmp_path / "loc")
    assert code == 0 and "Traceback" not in err
    assert "ordered and placed by SliceLocation" in out and "[3, 12, 10]" in out


def test_8_bit_png_screenshots(tmp_path, capsys):
    (tmp_path / "png").mkdir()
    for k in range(2):
        Image.fromarray(np.full((8, 8), 128, np.uint8)).save(tmp_path / "png" / f"{k + 1:03d}.png")
    code, _, err = run(capsys, "info", tmp_path / "png")
    assert code == 2
    error_line(err, "001.png", "8-bit", "value − 32768", "--png-values")


def test_truncated_dicom_file(tmp_path, capsys):
    (path,) = write_series(tmp_path / "cut", stored(1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "info", tmp_path / "cut")
    assert code == 2
    error_line(err, str(tmp_path / "cut"), path.name)


def test_corrupt_nifti(tmp_path, capsys):
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b this is not a NIfTI")
    code, _, err = run(capsys, "info", tmp_path / "bad.nii.gz")
    assert code == 2
    error_line(err, "bad.nii.gz", "not a readable NIfTI")


def test_truncated_nifti(tmp_path, capsys):
    path = nifti(tmp_path / "cut.nii.gz", z=20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "info", path)
    assert code == 2
    error_line(err, "cut.nii.gz", "not a readable NIfTI")


def test_wrong_modality(tmp_path, capsys):
    write_series(tmp_path / "mr", stored(2), modality="MR")
    code, _, err = run(capsys, "info", tmp_path / "mr")
    assert code == 2
    error_line(err, str(tmp_path / "mr"), "no CT images (found MR ×2)")


def test_two_studies_mixed_in_one_folder(tmp_path, capsys):
    write_series(tmp_path / "mix" / "a", stored(3), series_uid="1.2.3.1", description="soft")
    write_series(tmp_path / "mix" / "b", stored(2), series_uid="1.2.3.2", description="lung",
                 attrs={"StudyInstanceUID": "1.2.3.5"})
    code, _, err = run(capsys, "info", tmp_path / "mix")
    assert code == 2
    error_line(err, "2 CT series of 2 studies", "--series", "1.2.3.1", "1.2.3.2")


def test_two_series_of_one_study_are_read_by_the_rule(tmp_path, capsys):
    write_series(tmp_path / "mix" / "a", stored(3), series_uid="1.2.3.1", description="soft")
    write_series(tmp_path / "mix" / "b", stored(2), series_uid="1.2.3.2", description="lung")
    code, out, _ = run(capsys, "info", tmp_path / "mix")
    assert code == 0 and "read series 1.2.3.1 (default rule" in out and "1.2.3.2 (2 slices, 'lung'" in out


def test_z_gap_is_read_with_a_warning(tmp_path, capsys):
    for k, z in enumerate([0.0, 2.0, 8.0]):
        write_slice(tmp_path / f"{k}.dcm", stored(3)[k], position=(0, 0, z))
    code, out, err = run(capsys, "info", tmp_path)
    assert code == 0 and "Traceback" not in err and "uneven slice spacing" in out


def test_gantry_tilt_is_read_with_a_warning(tmp_path, capsys):
    for k in range(3):
        write_slice(tmp_path / f"{k}.dcm", stored(3)[k], position=(0, 0.5 * k, 2.0 * k))
    code, out, _ = run(capsys, "info", tmp_path)
    assert code == 0 and "gantry tilt" in out


def test_duplicate_slice_positions(tmp_path, capsys):
    write_slice(tmp_path / "a.dcm", stored(2)[0], position=(0, 0, 5))
    write_slice(tmp_path / "b.dcm", stored(2)[1], position=(0, 0, 5))
    code, _, err = run(capsys, "info", tmp_path)
    assert code == 2
    error_line(err, "a.dcm", "b.dcm", "duplicate slice position")


def test_npz_with_nan_and_inf(tmp_path, capsys):
    hu = np.zeros((3, 8, 8), np.float32)
    hu[1, 2, 3], hu[2, 0, 0] = np.nan, np.inf
    np.savez(tmp_path / "v.npz", hu=hu)
    code, _, err = run(capsys, "info", tmp_path / "v.npz")
    assert code == 2
    error_line(err, "v.npz", "NaN or infinite")


def test_empty_folder_and_missing_path(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "info", tmp_path / "empty")
    assert code == 2
    error_line(err, str(tmp_path / "empty"), "no DICOM files")
    code, _, err = run(capsys, "info", tmp_path / "nowhere")
    assert code == 2
    error_line(err, str(tmp_path / "nowhere"), "no such file or folder")


def test_ct_secondary_capture(tmp_path, capsys):
    write_series(tmp_path / "sc", stored(2))
    rewrite(tmp_path / "sc", SOPClassUID=pydicom.uid.SecondaryCaptureImageStorage)
    code, _, err = run(capsys, "info", tmp_path / "sc")
    assert code == 2
    error_line(err, "Secondary Capture Image Storage")


# ------------------------------------------------------------------------------------------------------- extract

def test_missing_and_corrupt_scans_do_not_stop_extract(cohort, tmp_path, capsys):
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b garbage")
    table = scans_table(tmp_path / "scans.csv", [("n0", "p0", cohort / "n0.nii.gz"), ("gone", "pg", "gone.nii.gz"),
                                                  ("bad", "pb", "bad.nii.gz"), ("n1", "p1", cohort / "n1.nii.gz")])
    out = tmp_path / "feats"
    code, stdout, err = run(capsys, "extract", "--scans", table, "--encoder", ENCODER, "--out", out,
                            "--workers", "1")
    assert code == 1
    lines = failure_lines(err, "extract")
    assert len(lines) == 2
    assert "gone failed:" in lines[0] and str(tmp_path / "gone.nii.gz") in lines[0] and "no such file" in lines[0]
    assert "bad failed:" in lines[1] and "bad.nii.gz" in lines[1] and "not a readable NIfTI" in lines[1]
    assert "2 done" in stdout and "2 failed" in stdout and "failures.csv" in stdout
    assert sorted(p.name for p in out.glob("*.h5")) == ["n0.h5", "n1.h5"]
    assert [r["scan_id"] for r in failures_csv(out)] == ["gone", "bad"]
    assert not leftovers(out)


@pytest.mark.parametrize(("body", "culprit"), [
    ("scan_id,path\nA,a.nii.gz\n", "missing column(s) patient_id"),
    ("scan_id,patient_id,path\nA,P,a.nii.gz\nA,Q,b.nii.gz\n", "duplicate scan_id A"),
    ("scan_id,patient_id,path\n", "lists no scans"),
    ("scan_id,patient_id,path\nA,,a.nii.gz\n", "empty scan_id, patient_id or path on line(s) 2"),
])
def test_broken_scans_tables(tmp_path, capsys, body, culprit):
    (tmp_path / "scans.csv").write_text(body)
    code, _, err = run(capsys, "extract", "--scans", tmp_path / "scans.csv", "--encoder", ENCODER,
                       "--out", tmp_path / "out")
    assert code == 2
    error_line(err, str(tmp_path / "scans.csv"), culprit)
    assert not list((tmp_path / "out").glob("*.h5"))


def test_baseline_without_weights_is_refused_before_any_work(cohort, tmp_path, capsys):
    table = scans_table(tmp_path / "scans.csv", [("n0", "p0", cohort / "n0.nii.gz")])
    code, _, err = run(capsys, "extract", "--scans", table, "--encoder", "biomedclip", "--out", tmp_path / "out")
    assert code == 2
    error_line(err, "--encoder biomedclip", "--weights", "--random-init")
    assert not (tmp_path / "out").exists()


def test_feature_folder_of_another_encoder(cohort, tmp_path, capsys):
    table = scans_table(tmp_path / "scans.csv", [("n0", "p0", cohort / "n0.nii.gz")])
    out = tmp_path / "feats"
    features(out, "n0", "p0", encoder="mambaout_test")
    before = (out / "n0.h5").read_bytes()
    code, _, err = run(capsys, "extract", "--scans", table, "--encoder", ENCODER, "--out", out)
    assert code == 2
    error_line(err, "n0.h5", "mambaout_test", "--overwrite")
    assert (out / "n0.h5").read_bytes() == before  # nothing overwritten


def test_more_than_20_failures_are_counted_not_all_printed(cohort, tmp_path, capsys):
    rows = [(f"m{i:02d}", f"q{i}", f"missing{i}.nii.gz") for i in range(23)] + [("n0", "p0", cohort / "n0.nii.gz")]
    out = tmp_path / "feats"
    code, stdout, err = run(capsys, "extract", "--scans", scans_table(tmp_path / "s.csv", rows), "--encoder",
                            ENCODER, "--out", out, "--workers", "0")
    assert code == 1
    assert len(failure_lines(err, "extract")) == 20 and "further failures are not shown" in err
    assert "23 failed" in stdout and "3 of them not shown above" in stdout and len(failures_csv(out)) == 23
    assert (out / "n0.h5").is_file()


def _cli_subprocess(args: list, *, preexec=None, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clearct", *map(str, args)], capture_output=True, text=True,
                          timeout=300, preexec_fn=preexec, cwd=cwd)


def _file_size_limit(limit: int):
    def apply() -> None:  # writes past the limit fail with EFBIG, as on a full disk (ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_full_disk_during_extract(tmp_path):
    rows = []
    for i in range(2):  # 40 slices × 2 windows × 64 floats: each feature file is larger than the limit
        nifti(tmp_path / f"big{i}.nii.gz", z=40, seed=i)
        rows.append((f"big{i}", f"p{i}", f"big{i}.nii.gz"))
    out = tmp_path / "feats"
    proc = _cli_subprocess(["extract", "--scans", scans_table(tmp_path / "scans.csv", rows), "--encoder", ENCODER,
                            "--out", out, "--workers", "0"], preexec=_file_size_limit(16_000))
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = failure_lines(proc.stderr, "extract")
    assert [ln.split(" failed:")[0] for ln in lines] == ["clearct extract: big0", "clearct extract: big1"]
    assert "Traceback" not in proc.stderr
    assert not list(out.glob("*.h5")) and not leftovers(out)  # nothing half-written
    assert [r["scan_id"] for r in failures_csv(out)] == ["big0", "big1"]


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` read-only even for root: the immutable attribute where root runs the tests, else mode 555."""
    folder.mkdir()
    root = os.geteuid() == 0
    if root and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root without chattr +i: no way to make a folder read-only here")
    if not root:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if root:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


@pytest.mark.slow
def test_read_only_output_folder(tmp_path):
    nifti(tmp_path / "n0.nii.gz")
    table = scans_table(tmp_path / "scans.csv", [("n0", "p0", "n0.nii.gz")])
    with read_only(tmp_path / "ro") as out:
        proc = _cli_subprocess(["extract", "--scans", table, "--encoder", ENCODER, "--out", out])
        assert proc.returncode == 2, proc.stderr[-3000:]
        line = error_line(proc.stderr, str(out))
        assert "ermission denied" in line or "ot permitted" in line, line
        assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------- crossval, deploy, attention, predict

@pytest.mark.parametrize(("labels", "culprit"), [
    ("patient_id,finding\np0,1\np0,0\n", "duplicate patient_id p0"),
    ("subject,finding\np0,1\n", "needs a patient_id or scan_id column"),
])
def test_broken_label_tables(cohort, tmp_path, capsys, labels, culprit):
    (tmp_path / "labels.csv").write_text(labels)
    code, _, err = run(capsys, "crossval", "--features", cohort / "feats", "--labels", tmp_path / "labels.csv",
                       "--targets", "finding", *FAST_CV, "--out", tmp_path / "cv")
    assert code == 2
    error_line(err, str(tmp_path / "labels.csv"), culprit)


def test_unknown_target(cohort, tmp_path, capsys):
    code, _, err = run(capsys, "crossval", "--features", cohort / "feats", "--labels", cohort / "labels.csv",
                       "--targets", "finding,tumour", *FAST_CV, "--out", tmp_path / "cv")
    assert code == 2
    error_line(err, "labels.csv", "tumour", "not in the labels table")


def test_wrong_typed_and_missing_label_rows(cohort, tmp_path, capsys):
    text = (cohort / "labels.csv").read_text().replace("p3,1,", "p3,maybe,")  # a word where 0/1 belongs
    lines = [ln for ln in text.splitlines() if not ln.startswith("p5,")]  # p5 has no label row
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "cv"
    code, stdout, err = run(capsys, "crossval", "--features", cohort / "feats", "--labels",
                            tmp_path / "labels.csv", "--targets", "finding", "--task", "multilabel", *FAST_CV,
                            "--out", out)
    assert code == 1 and "Traceback" not in err  # a broken label value is a failure: rc 1 at the end
    assert "patient_id p3" in err and "'maybe' is not 0/1" in err and "no label row for 1 feature file(s) (s5)" in err
    assert [r["scan_id"] for r in failures_csv(out)] == ["s3"]
    used = {r["scan_id"] for r in csv.DictReader((out / "predictions.csv").open())}
    assert used == {"s0", "s1", "s2", "s4", "s6", "s7"}  # the rest of the batch ran


def _broken_h5(feats: Path, kind: str) -> str:
    if kind == "nan":
        features(feats, "s2", "p2", seed=2)
        with h5py.File(feats / "s2.h5", "r+") as h5:
            h5["feats"][0, 0] = np.nan
        return "s2"
    if kind == "empty":
        with h5py.File(feats / "s4.h5", "r+") as h5:  # a bag with no instance
            for name in ("feats", "slice_index", "z_mm", "window"):
                data = h5[name][()]
                del h5[name]
                h5.create_dataset(name, data=data[:0])
        return "s4"
    data = (feats / "s6.h5").read_bytes()
    (feats / "s6.h5").write_bytes(data[: len(data) // 3])  # truncated
    return "s6"


@pytest.mark.parametrize(("kind", "says"), [("nan", "NaN"), ("empty", "empty bag"), ("truncated", "unreadable")])
def test_broken_feature_files_are_left_out(cohort, tmp_path, capsys, kind, says):
    feats = copy_feats(cohort, tmp_path)
    scan = _broken_h5(feats, kind)
    out = tmp_path / "cv"
    code, _, err = run(capsys, "crossval", "--features", feats, "--labels", cohort / "labels.csv", "--targets",
                       "finding", "--task", "binary", *FAST_CV, "--out", out)
    assert code == 1 and "Traceback" not in err
    line = next(ln for ln in err.splitlines() if f"{scan}.h5" in ln)
    assert says in line and "left out" in line
    assert [r["scan_id"] for r in failures_csv(out)] == [scan]
    assert len({r["scan_id"] for r in csv.DictReader((out / "predictions.csv").open())}) == 7


def test_features_of_two_encoders_in_one_folder(cohort, tmp_path, capsys):
    feats = copy_feats(cohort, tmp_path)
    features(feats, "s9", "p9", encoder="mambaout_test", dim=32)
    code, _, err = run(capsys, "crossval", "--features", feats, "--labels", cohort / "labels.csv", "--targets",
                       "finding", *FAST_CV, "--out", tmp_path / "cv")
    assert code == 2
    error_line(err, "s9.h5", "mambaout_test")


def test_feature_folder_that_does_not_exist(cohort, tmp_path, capsys):
    code, _, err = run(capsys, "crossval", "--features", tmp_path / "nofeats", "--labels", cohort / "labels.csv",
                       "--targets", "finding", *FAST_CV, "--out", tmp_path / "cv")
    assert code == 2
    error_line(err, str(tmp_path / "nofeats"), "no <scan_id>.h5 feature files")


def test_deploy_on_features_of_another_encoder(cohort, tmp_path, capsys):
    for i in range(3):
        features(tmp_path / "ext", f"e{i}", f"x{i}", encoder="mambaout_test")
    (tmp_path / "labels.csv").write_text("patient_id,finding\nx0,0\nx1,1\nx2,0\n")
    code, _, err = run(capsys, "deploy", "--model", cohort / "cv", "--features", tmp_path / "ext", "--labels",
                       tmp_path / "labels.csv", "--out", tmp_path / "dep", "--bootstrap", "0")
    assert code == 2
    error_line(err, str(tmp_path / "ext"), "mambaout_test", "trained on vit_conv_test")


def test_deploy_on_training_patients_is_refused(cohort, tmp_path, capsys):
    code, _, err = run(capsys, "deploy", "--model", cohort / "cv", "--features", cohort / "feats", "--labels",
                       cohort / "labels.csv", "--out", tmp_path / "dep", "--bootstrap", "0")
    assert code == 2
    error_line(err, "were used to train these models", "--allow-overlap")


def test_deploy_with_a_broken_file_does_the_rest(cohort, tmp_path, capsys):
    labels = ["patient_id,finding"]
    for i in range(4):
        features(tmp_path / "ext", f"e{i}", f"x{i}", seed=20 + i)
        labels.append(f"x{i},{i % 2}")
    (tmp_path / "labels.csv").write_text("\n".join(labels) + "\n")
    (tmp_path / "ext" / "e3.h5").write_bytes(b"not hdf5")
    out = tmp_path / "dep"
    code, _, err = run(capsys, "deploy", "--model", cohort / "cv", "--features", tmp_path / "ext", "--labels",
                       tmp_path / "labels.csv", "--out", out, "--bootstrap", "0")
    assert code == 1 and "Traceback" not in err and "e3.h5" in err
    assert [r["scan_id"] for r in failures_csv(out)] == ["e3"]
    assert {r["scan_id"] for r in csv.DictReader((out / "predictions.csv").open())} == {"e0", "e1", "e2"}


def test_model_folder_without_models(cohort, tmp_path, capsys):
    (tmp_path / "nomodel").mkdir()
    code, _, err = run(capsys, "attention", "--model", tmp_path / "nomodel", "--features", cohort / "feats",
                       "--out", tmp_path / "att")
    assert code == 2
    error_line(err, str(tmp_path / "nomodel"), "no trained models")


@pytest.mark.slow
def test_predict_over_a_list_goes_on_past_a_missing_scan(cohort, tmp_path, capsys):
    table = scans_table(tmp_path / "scans.csv", [("n0", "p0", cohort / "n0.nii.gz"), ("gone", "pg", "gone"),
                                                  ("n2", "p2", cohort / "n2.nii.gz")])
    out = tmp_path / "pred"
    code, stdout, err = run(capsys, "predict", table, "--model", cohort / "cv", "--encoder", ENCODER,
                            "--out", out, "--device", "cpu")
    assert code == 1
    (line,) = failure_lines(err, "predict")
    assert "gone failed:" in line and "no such file or folder" in line
    assert "random-init" in err or "randomly initialised" in err  # the features are random: said so
    for scan in ("n0", "n2"):
        result = json.loads((out / scan / "prediction.json").read_text())
        assert result["scan_id"] == scan and any("randomly initialised" in w for w in result["warnings"])
    assert [r["scan_id"] for r in csv.DictReader((out / "predictions.csv").open())] == ["n0", "n2"]
    assert "2 scans predicted" in stdout and not (out / "gone").exists()


def test_predict_with_the_wrong_encoder_is_refused_before_reading(cohort, tmp_path, capsys):
    code, _, err = run(capsys, "predict", cohort / "n0.nii.gz", "--model", cohort / "cv", "--encoder",
                       "mambaout_test", "--out", tmp_path / "pred", "--device", "cpu")
    assert code == 2
    error_line(err, "mambaout_test", "trained on vit_conv_test")


# ---------------------------------------------------------------------------------------- pretrain, import, config

def test_lecl_without_lesions_and_with_broken_boxes(cohort, tmp_path, capsys):
    table = scans_table(tmp_path / "scans.csv", [("n0", "p0", cohort / "n0.nii.gz")])
    common = ["pretrain", "--scans", table, "--arch", ENCODER, "--method", "lecl", "--epochs", "1",
              "--device", "cpu", "--out", tmp_path / "run"]
    code, _, err = run(capsys, *common)
    assert code == 2
    error_line(err, "--lesions")
    (tmp_path / "lesions.csv").write_text("scan_id,slice_index,x1,y1,x2,y2,label\nn0,1,20,20,10,30,liver\n")
    code, _, err = run(capsys, *common, "--lesions", tmp_path / "lesions.csv")
    assert code == 2
    error_line(err, "lesions.csv", "line(s) 2")


def test_drasclr_skips_a_missing_scan_and_trains_on_the_rest(tmp_path, capsys):
    run_dir = tmp_path / "run"
    table = drasclr_scans(tmp_path, [("gone", "pg", "gone.npz")])
    code, _, err = run(capsys, "pretrain", "--scans", table, *DRASCLR, "--epochs", "1", "--out", run_dir)
    assert code == 1
    (line,) = failure_lines(err, "pretrain")
    assert "gone failed:" in line and "gone.npz" in line
    assert "preset cpu" in err and "steps of 8 anchors" in err
    info = json.loads((run_dir / "encoder.json").read_text())["info"]
    assert info["data"]["scans"] == 2 and info["data"]["skipped"] == ["gone"]
    assert [r["scan_id"] for r in failures_csv(run_dir)] == ["gone"]


def test_corrupt_checkpoint_on_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "drasclr-checkpoint.pt").write_bytes(b"PK\x03\x04 cut short")
    code, _, err = run(capsys, "pretrain", "--scans", drasclr_scans(tmp_path), *DRASCLR, "--resume",
                       "--out", run_dir)
    assert code == 2
    error_line(err, "drasclr-checkpoint.pt", "cannot read the checkpoint")


def test_import_of_a_folder_that_is_not_the_dataset(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run(capsys, "import", "deeplesion", tmp_path, "--out", tmp_path / "tables")
    assert code == 2
    error_line(err, str(tmp_path), "does not look like DeepLesion", "notes.txt")


def test_import_goes_on_past_an_unreadable_png(tmp_path, capsys):
    images = tmp_path / "Images_png"
    rows = ["File_name,Key_slice_index,Bounding_boxes,Coarse_lesion_type,Spacing_mm_px_"]
    for series in ("000001_01_01", "000002_01_01"):
        (images / series).mkdir(parents=True)
        for k in (1, 2):
            Image.fromarray(np.full((16, 16), 31744, np.uint16)).save(images / series / f"{k:03d}.png")
        rows.append(f'{series}_002.png,2,"2, 2, 8, 8",4,"0.7, 0.7, 5"')
    (images / "000002_01_01" / "002.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "DL_info.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "tables"
    code, stdout, err = run(capsys, "import", "deeplesion", tmp_path, "--out", out)
    assert code == 1
    (line,) = failure_lines(err, "import")
    assert "000002_01_01 failed:" in line and "002.png" in line and "not a readable PNG" in line
    assert [r["scan_id"] for r in csv.DictReader((out / "scans.csv").open())] == ["000001_01_01"]
    assert "failed: 1 unreadable file(s)" in stdout


def test_yaml_config_with_an_unknown_key(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("extract:\n  scans: s.csv\n  encoder: x\n  out: o\n  batchsize: 3\n")
    code, _, err = run(capsys, "extract", "--config", tmp_path / "c.yaml")
    assert code == 2
    error_line(err, "batchsize")


def test_png_value_mapping_that_does_not_parse(tmp_path, capsys):
    (tmp_path / "png").mkdir()
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(tmp_path / "png" / "001.png")
    code, _, err = run(capsys, "info", tmp_path / "png", "--png-values", "window:100")
    assert code == 2
    error_line(err, "--png-values 'window:100'", "window:LO:HI")


def test_synth_writes_the_patients_it_can_and_lists_the_other(tmp_path, capsys):
    blocked = tmp_path / "c" / "scans" / "s0p0002_ct.nii.gz"
    blocked.mkdir(parents=True)  # a folder where patient 2's file must go: that write fails, the others do not
    (blocked / "keep").write_text("x")
    code, stdout, err = run(capsys, "synth", tmp_path / "c", "--patients", "3", "--format", "nifti", "--size", "32",
                            "--slices", "4", "--workers", "1")
    assert code == 1
    (line,) = failure_lines(err, "synth")
    assert "s0p0002_ct failed:" in line and "s0p0002_ct.nii.gz" in line
    assert [r["scan_id"] for r in csv.DictReader((tmp_path / "c" / "scans.csv").open())] == ["s0p0001_ct",
                                                                                           "s0p0003_ct"]
    assert [r["scan_id"] for r in failures_csv(tmp_path / "c")] == ["s0p0002_ct"]
    assert "wrote 2 nifti scans" in stdout and "1 failed" in stdout
    assert not leftovers(tmp_path / "c" / "scans")

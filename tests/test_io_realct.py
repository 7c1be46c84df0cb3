"""Readers against real scanner output in ../shared/realct (skipped when absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from clearct.cli import main
from clearct.io import read_ct
from clearct.io.info import describe_volume
from clearct.io.nifti import read_nifti

pytestmark = pytest.mark.realct


def test_totalsegmentator_dicom_series(realct: Path) -> None:
    vol = read_ct(realct / "totalsegmentator" / "example_ct_dicom")  # JPEG 2000 lossless, names out of order
    assert vol.shape == (20, 512, 512)
    assert np.all(np.diff(vol.z_mm) > 0)
    np.testing.assert_allclose(vol.z_mm[[0, -1]], [-804.5, -766.5])
    assert vol.spacing_mm == pytest.approx((2.0, 0.9765625, 0.9765625))
    assert vol.hu.min() == -1024 and 1830 <= vol.hu.max() <= 1845
    assert vol.meta["kernel"].startswith("Br38f") and vol.meta["kvp"] == 120.0
    assert vol.warnings == []


def test_totalsegmentator_labels_align_voxel_for_voxel(realct: Path) -> None:
    ct = read_ct(realct / "totalsegmentator" / "example_ct_dicom")
    # the NIfTI reader itself: read_ct refuses a label map as CT (test_label_maps_are_refused_as_ct)
    seg = read_nifti(realct / "totalsegmentator" / "example_seg_dicom.nii.gz")  # rows flipped in the file
    assert seg.shape == ct.shape
    np.testing.assert_allclose(seg.z_mm, ct.z_mm)
    liver = seg.hu == 5
    assert liver.sum() > 100_000
    assert abs(np.median(ct.hu[liver]) - 92) <= 2
    # the check can tell: with the file's raw row order the "liver" would average about −75 HU
    assert ct.hu[liver[:, ::-1]].mean() < 0 < ct.hu[liver].mean()


def test_nifti_ct_int32_and_its_crop(realct: Path) -> None:
    full = read_ct(realct / "totalsegmentator" / "example_ct.nii.gz")
    assert full.shape == (112, 101, 122) and full.meta["source_dtype"] == "int32"
    assert full.spacing_mm == pytest.approx((3.0, 3.0, 3.0))
    assert (full.hu.min(), full.hu.max()) == (-1207, 3382)
    small = read_ct(realct / "totalsegmentator" / "example_ct_sm.nii.gz")
    np.testing.assert_array_equal(small.hu, full.hu[82:112])  # same voxels, z order kept


def test_dcmqi_padding_is_mapped_to_air(realct: Path) -> None:
    vol = read_ct(realct / "dcmqi_ct3slice")  # the DICOM-SEG beside the slices is ignored
    assert vol.shape == (3, 512, 512)
    assert vol.hu.min() == -1024
    assert vol.spacing_mm == pytest.approx((1.0, 0.810547, 0.810547))
    assert any("SEG" in w for w in vol.warnings)


def test_clearct_info_on_the_dicom_folder(realct: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = realct / "totalsegmentator" / "example_ct_dicom"
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "[20, 512, 512]" in out and "[2.0, 0.976562, 0.976562]" in out
    assert "[-804.5, -766.5]" in out and "JPEG 2000" in out and "warnings                none" in out
    facts = describe_volume(read_ct(folder))
    assert facts["z_ascending"] and facts["hu_range"][0] == -1024


def test_clearct_info_names_an_ambiguous_folder(realct: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(realct)]) == 2  # DICOM series in subfolders, NIfTI files beside them
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "ambiguous folder" in err and "dcmqi_ct3slice" in err and "totalsegmentator/example_ct_dicom" in err
    assert "example_ct.nii.gz" in err


def test_two_studies_are_listed_and_a_uid_less_series_is_picked_by_index(
        realct: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(realct / "dcmqi_ct3slice", tmp_path / "a")
    shutil.copytree(realct / "totalsegmentator" / "example_ct_dicom", tmp_path / "b")
    assert main(["info", str(tmp_path)]) == 2  # two studies: no rule may pick between patients
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "2 CT series of 2 studies" in err and "--series" in err
    assert "[1] number:2 1.2.392." in err and "(3 slices, 1.25 mm)" in err
    assert "[2] (no SeriesInstanceUID) (20 slices, 'CT Body 3.0', 3 mm)" in err
    vol = read_ct(tmp_path, series="index:2")  # TotalSegmentator's series has neither a UID nor a SeriesNumber
    assert vol.shape == (20, 512, 512) and vol.meta["series_uid"] == ""
    assert vol.meta["series_rule"] == "selected by index:2" and vol.meta["series_selector"] == "index:2"
    assert read_ct(tmp_path, series="number:2").shape == (3, 512, 512)


@pytest.mark.parametrize("name", ["example_seg.nii.gz", "example_seg_dicom.nii.gz"])
def test_label_maps_are_refused_as_ct(realct: Path, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = realct / "totalsegmentator" / name
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "label map" in err and "0 … 117" in err


def test_one_file_of_a_series_is_read_with_a_warning(realct: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one = sorted((realct / "totalsegmentator" / "example_ct_dicom").iterdir())[0]
    assert main(["info", str(one)]) == 0
    out = capsys.readouterr().out
    assert "[1, 512, 512]" in out and "a single slice (one file of a series? read its folder)" in out


def test_clearct_scans_on_the_real_series(realct: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scans.csv"
    assert main(["scans", str(realct), "--out", str(out), "--absolute-paths"]) == 0
    printed = capsys.readouterr().out
    assert "2 CT series in 2 studies of 2 patients → 2 rows" in printed
    assert "skipped 1 SEG (not a CT image)" in printed and "skipped 8 not DICOM" in printed
    from clearct.io import read_scans_table

    rows = {r.path.name: r for r in read_scans_table(out)}
    ts, dcmqi = rows["example_ct_dicom"], rows["dcmqi_ct3slice"]
    assert ts.series == "index:1" and ts.patient_id == "totalsegmentator"  # no UID, no number, no PatientID
    assert dcmqi.series.startswith("1.2.392.") and dcmqi.patient_id == "99000"
    assert read_ct(ts.path, series=ts.series).shape == (20, 512, 512)
    assert read_ct(dcmqi.path, series=dcmqi.series).shape == (3, 512, 512)

"""DICOM reader on series the tests write themselves with pydicom."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, RLELossless

from clearct.common.errors import ClearctError
from clearct.io import read_ct
from ct_dicom import PHI, rewrite, write_enhanced, write_series, write_slice


def _stored(z: int = 5, y: int = 12, x: int = 10, seed: int = 0) -> np.ndarray:
    """Stored values (HU + 1024) with a distinct value per slice so order mistakes show."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2000, size=(z, y, x))
    base[:, 0, 0] = np.arange(z) * 100  # slice signature
    return base.astype(np.int16)


def test_shuffled_names_and_reversed_z_are_ordered_by_position(tmp_path: Path) -> None:
    stored = _stored()
    # slice k lies at z = −100 + 2k, but files are written from superior to inferior with shuffled names
    names = [f"x{n}.dcm" for n in random.Random(1).sample(range(100), 5)]
    for k in range(5):
        write_slice(tmp_path / names[k], stored[k], position=(-100, -120, -100 + 2 * k), instance=5 - k)
    vol = read_ct(tmp_path)
    np.testing.assert_array_equal(vol.hu, stored.astype(np.int32) - 1024)
    np.testing.assert_allclose(vol.z_mm, -100 + 2 * np.arange(5) + 0.0)
    assert vol.spacing_mm == pytest.approx((2.0, 0.8, 0.8))
    assert vol.meta["warnings"] == []
    # the same slices with z running downwards (feet-first): still inferior → superior
    down = tmp_path / "down"
    write_series(down, stored[::-1], z0=-92.0, dz=-2.0)
    np.testing.assert_array_equal(read_ct(down).hu, vol.hu)


def test_no_phi_leaves_the_reader(tmp_path: Path) -> None:
    write_series(tmp_path, _stored(2))
    vol = read_ct(tmp_path)
    text = repr(vol.meta) + vol.patient_id + vol.scan_id
    for value in PHI.values():
        assert value not in text
    assert vol.meta["kernel"] == "B30f" and vol.meta["kvp"] == 120.0 and vol.meta["manufacturer"] == "TestVendor"


def test_two_series_of_one_study_follow_the_default_rule(tmp_path: Path) -> None:
    stored = _stored()
    write_series(tmp_path / "a", stored, series_uid="1.2.3.111", description="soft")
    write_series(tmp_path / "b", stored[:3], series_uid="1.2.3.222", description="lung")
    vol = read_ct(tmp_path)  # one study: the series with the larger z coverage, said so in the warnings
    assert vol.shape[0] == 5 and vol.meta["series_uid"] == "1.2.3.111"
    assert vol.meta["series_rule"].startswith("default rule") and vol.meta["series_selector"] == "1.2.3.111"
    warning = next(w for w in vol.warnings if w.startswith("read series"))
    assert "1.2.3.111 (5 slices, 'soft', 2 mm)" in warning and "1.2.3.222 (3 slices, 'lung', 2 mm)" in warning
    vol = read_ct(tmp_path, series="1.2.3.222")
    assert vol.shape == (3, 12, 10) and vol.meta["series_uid"] == "1.2.3.222"
    with pytest.raises(ClearctError, match="series 9.9 not found"):
        read_ct(tmp_path, series="9.9")


def test_corrupt_file_is_skipped_with_a_warning(tmp_path: Path) -> None:
    files = write_series(tmp_path, _stored())
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) - 100])  # pixel data cut short
    (tmp_path / "README.txt").write_text("not a DICOM file, ignored quietly")
    vol = read_ct(tmp_path)
    assert vol.shape[0] == 4
    warnings = " | ".join(vol.warnings)
    assert "broken.dcm" in warnings and files[2].name in warnings and "README" not in warnings
    assert "uneven slice spacing" in warnings  # slice 2 is missing: a 4 mm gap
    np.testing.assert_allclose(vol.z_mm, [-100, -98, -94, -92])


def test_nothing_readable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(ClearctError, match="no readable CT image.*a.dcm"):
        read_ct(tmp_path)


def test_mr_is_refused_and_ignored_beside_ct(tmp_path: Path) -> None:
    mr = tmp_path / "mr"
    mr.mkdir()
    write_slice(mr / "mr.dcm", _stored(1)[0], position=(0, 0, 0), modality="MR")
    with pytest.raises(ClearctError, match=r"no CT images \(found MR ×1\)"):
        read_ct(mr)
    with pytest.raises(ClearctError, match="no CT images"):
        read_ct(get_testdata_file("MR_small.dcm"))
    write_series(tmp_path / "ct", _stored(3))
    shutil.copy(mr / "mr.dcm", tmp_path / "ct" / "mr.dcm")
    vol = read_ct(tmp_path / "ct")
    assert vol.shape[0] == 3 and any("MR ×1" in w for w in vol.warnings)


def test_no_position_is_ordered_by_slice_location_with_a_warning(tmp_path: Path) -> None:
    stored = _stored()
    names = [f"x{n}.dcm" for n in random.Random(3).sample(range(100), 5)]
    for k in range(5):  # shuffled names, instance numbers running the other way: SliceLocation decides
        write_slice(tmp_path / names[k], stored[k], position=(-100, -120, -100 + 2 * k), instance=5 - k)
    rewrite(tmp_path, "ImagePositionPatient", SliceLocation=lambda ds: ds.ImagePositionPatient[2])
    vol = read_ct(tmp_path)
    np.testing.assert_array_equal(vol.hu, stored.astype(np.int32) - 1024)
    np.testing.assert_allclose(vol.z_mm, -100 + 2 * np.arange(5))
    assert vol.spacing_mm == pytest.approx((2.0, 0.8, 0.8))
    assert vol.warnings == ["no ImagePositionPatient: slices ordered and placed by SliceLocation; "
                            "in-plane origin unknown"]


def test_no_position_nor_location_falls_back_to_instance_number(tmp_path: Path) -> None:
    stored = _stored(4)
    for k in range(4):  # instance 1 = most superior slice (the usual craniocaudal acquisition)
        write_slice(tmp_path / f"{k}.dcm", stored[k], position=(0, 0, 2.0 * k), instance=4 - k, thickness=2.5)
    rewrite(tmp_path, "ImagePositionPatient", "ImageOrientationPatient")
    vol = read_ct(tmp_path)
    np.testing.assert_array_equal(vol.hu, stored.astype(np.int32) - 1024)
    assert vol.spacing_mm[0] == 2.5  # SliceThickness stands in for the unknown gap
    text = " | ".join(vol.warnings)
    assert "ordered by InstanceNumber" in text and "z direction not verified" in text
    assert "no ImageOrientationPatient: axial slices assumed" in text


def test_no_position_and_nothing_to_order_by_is_one_clear_error(tmp_path: Path) -> None:
    write_series(tmp_path, _stored(3))
    rewrite(tmp_path, "ImagePositionPatient", InstanceNumber=1)  # every slice claims instance 1
    with pytest.raises(ClearctError) as err:
        read_ct(tmp_path)
    msg = str(err.value)
    assert msg.startswith(str(tmp_path)) and "no ImagePositionPatient (0020,0032) in 3 file(s)" in msg
    assert "SliceLocation" in msg and "InstanceNumber" in msg and "\n" not in msg


def test_files_without_position_beside_placed_ones_are_left_out(tmp_path: Path) -> None:
    files = write_series(tmp_path, _stored(4))
    ds = pydicom.dcmread(files[1])
    del ds.ImagePositionPatient
    ds.save_as(files[1])
    vol = read_ct(tmp_path)
    assert vol.shape[0] == 3 and any(f"without ImagePositionPatient (e.g. {files[1].name})" in w for w in vol.warnings)


def test_ct_secondary_capture_is_refused_by_name(tmp_path: Path) -> None:
    write_series(tmp_path, _stored(2))
    rewrite(tmp_path, SOPClassUID=pydicom.uid.SecondaryCaptureImageStorage)
    with pytest.raises(ClearctError, match=r"no CT images \(found CT Secondary Capture Image Storage ×2\)"):
        read_ct(tmp_path)


def test_gap_in_z_is_kept_and_warned(tmp_path: Path) -> None:
    stored = _stored(4)
    for k, z in enumerate([0.0, 2.0, 4.0, 10.0]):
        write_slice(tmp_path / f"{k}.dcm", stored[k], position=(0, 0, z))
    vol = read_ct(tmp_path)
    np.testing.assert_allclose(vol.z_mm, [0, 2, 4, 10])
    assert vol.spacing_mm[0] == 2.0
    assert any("uneven slice spacing" in w and "6.000" in w for w in vol.warnings)


def test_duplicate_positions_are_an_error(tmp_path: Path) -> None:
    stored = _stored(2)
    write_slice(tmp_path / "a.dcm", stored[0], position=(0, 0, 5))
    write_slice(tmp_path / "b.dcm", stored[1], position=(0, 0, 5))
    with pytest.raises(ClearctError, match="duplicate slice position.*a.dcm and b.dcm"):
        read_ct(tmp_path)


@pytest.mark.parametrize(
    ("orientation", "to_file"),
    [
        ((-1, 0, 0, 0, -1, 0), lambda s: s[::-1, ::-1]),  # columns run L→R, rows P→A
        ((0, 1, 0, 1, 0, 0), lambda s: s.T),  # transposed: along a row = posterior
        ((1, 0, 0, 0, -1, 0), lambda s: s[::-1, :]),  # rows P→A only
    ],
)
def test_orientation_is_brought_to_the_contract(tmp_path: Path, orientation, to_file) -> None:
    """The same anatomy stored with other direction cosines reads back identically."""
    stored = _stored(3, 12, 12)
    ref = tmp_path / "ref"
    write_series(ref, stored, spacing=(0.7, 0.7))
    want = read_ct(ref)
    other = tmp_path / "other"
    other.mkdir()
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    for k in range(3):
        # the first stored pixel must sit on the patient-space corner that pixel holds in the reference
        corner_index = np.argwhere(to_file(np.arange(144).reshape(12, 12)) == 0)[0]  # (r, c) of ref pixel (0, 0)
        origin = np.array([-100, -120, -100 + 2 * k]) - (corner_index[0] * col + corner_index[1] * row) * 0.7
        write_slice(other / f"{k}.dcm", np.ascontiguousarray(to_file(stored[k])), position=origin,
                    orientation=orientation, spacing=(0.7, 0.7))
    got = read_ct(other)
    np.testing.assert_array_equal(got.hu, want.hu)
    np.testing.assert_allclose(got.z_mm, want.z_mm)


def test_gantry_tilt_is_warned(tmp_path: Path) -> None:
    stored = _stored(3)
    for k in range(3):  # each slice shifted 0.5 mm in y per 2 mm in z: ≈14° tilt
        write_slice(tmp_path / f"{k}.dcm", stored[k], position=(0, 0.5 * k, 2.0 * k))
    vol = read_ct(tmp_path)
    assert any("gantry tilt 14.0°" in w for w in vol.warnings)


def test_padding_value_and_range_become_air(tmp_path: Path) -> None:
    stored = np.full((1, 4, 4), 1000, np.int16)  # 1000 − 1024 = −24 HU
    stored[0, 0, :] = -2000  # padding value
    stored[0, 1, :] = -2300  # beyond the padding value, away from the data (a lossy codec's spread): padding too
    stored[0, 2, :] = -1500  # between padding and data: −2524 HU, clipped to the physical range and counted
    write_slice(tmp_path / "a.dcm", stored[0], position=(0, 0, 0), padding=-2000)
    vol = read_ct(tmp_path / "a.dcm")
    assert list(vol.hu[0, :, 0]) == [-1024, -1024, -1024, -24]
    assert vol.meta["hu_clipped"] == {"below_-1024": 4}  # only the −1500 row: padding is not "clipped"
    write_slice(tmp_path / "a.dcm", stored[0], position=(0, 0, 0), padding=-2000, padding_limit=-1024)
    vol = read_ct(tmp_path / "a.dcm")
    assert list(vol.hu[0, :, 0]) == [-1024, -1024, -1024, -24] and "hu_clipped" not in vol.meta
    # padding above the data (e.g. an unsigned 4095 marker): values at or beyond it are padding, not 3000 HU
    high = np.full((1, 4, 4), 1000, np.int16)
    high[0, 0, :], high[0, 1, :] = 4095, 4200
    write_slice(tmp_path / "b.dcm", high[0], position=(0, 0, 0), padding=4095)
    assert list(read_ct(tmp_path / "b.dcm").hu[0, :, 0]) == [-1024, -1024, -24, -24]


def test_lossy_jpeg2000_padding_and_clip_on_pydicoms_file() -> None:
    """pydicom's 693_J2KI.dcm: lossy JPEG 2000 with PixelPaddingValue −2000; the codec leaves stored values from
    −2971 up, i.e. down to −3995 HU, around the field of view."""
    path = get_testdata_file("693_J2KI.dcm")
    stored = pydicom.dcmread(path).pixel_array.astype(np.int32)
    assert stored.min() < -2000  # the smear this reader must handle
    vol = read_ct(path)
    assert vol.hu.min() == -1024 and vol.hu.max() == stored.max() - 1024
    # at or below the padding value: padding (−1024, not counted); between it and the data: clipped and counted
    assert np.count_nonzero(vol.hu == -1024) == np.count_nonzero(stored <= 0)
    assert vol.meta["hu_clipped"] == {"below_-1024": int(np.count_nonzero((stored > -2000) & (stored < 0)))}


def test_rescale_slope_and_intercept(tmp_path: Path) -> None:
    stored = np.array([[[0, 10], [20, 30]]], np.int16)
    write_slice(tmp_path / "a.dcm", stored[0], position=(0, 0, 0), slope=2.5, intercept=-1000)
    np.testing.assert_array_equal(read_ct(tmp_path / "a.dcm").hu[0], [[-1000, -975], [-950, -925]])


def test_enhanced_multiframe_equals_the_single_frame_series(tmp_path: Path) -> None:
    stored = _stored(4)
    write_series(tmp_path / "single", stored)
    positions = [(-100.0, -120.0, -100.0 + 2 * k) for k in range(4)]
    order = [2, 0, 3, 1]  # frames stored out of order
    (tmp_path / "multi").mkdir()
    path = write_enhanced(tmp_path / "multi" / "enh.dcm", stored[order], [positions[i] for i in order])
    single, multi = read_ct(tmp_path / "single"), read_ct(path.parent)
    np.testing.assert_array_equal(multi.hu, single.hu)
    np.testing.assert_allclose(multi.z_mm, single.z_mm)
    assert multi.spacing_mm == single.spacing_mm
    assert multi.meta["sop_class"] == "Enhanced CT Image Storage" and multi.meta["n_files"] == 1


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, RLELossless])
def test_compressed_transfer_syntaxes(tmp_path: Path, syntax) -> None:
    stored = _stored(3, 64, 64)  # openjpeg needs tiles larger than its resolution levels
    files = write_series(tmp_path, stored)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(syntax)
        ds.save_as(f)
    vol = read_ct(tmp_path)
    assert vol.meta["transfer_syntax"] == syntax.name
    np.testing.assert_array_equal(vol.hu, stored.astype(np.int32) - 1024)


def test_jpeg_lossless_decoder_is_installed() -> None:
    """JPEG Lossless (process 14) decodes through the pylibjpeg plugin; pydicom has no encoder to write one."""
    ds = pydicom.dcmread(get_testdata_file("SC_rgb_jpeg_gdcm.dcm"))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    assert ds.pixel_array.shape == (100, 100, 3)


def test_bundled_ct_small_reads() -> None:
    vol = read_ct(get_testdata_file("CT_small.dcm"))
    assert vol.shape == (1, 128, 128)
    assert vol.spacing_mm == pytest.approx((5.0, 0.661468, 0.661468))
    np.testing.assert_allclose(vol.z_mm, [-75.699997])
    assert -1100 < vol.hu.min() < vol.hu.max() < 2000


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ClearctError, match="no such file"):
        read_ct(tmp_path / "nope")

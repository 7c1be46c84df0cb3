"""NIfTI, DeepLesion PNG and npz readers, and read_ct's dispatch, on files the tests write."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from clearct.common.errors import ClearctError
from clearct.io import read_ct
from clearct.io.read import input_kind


def _contract_volume() -> np.ndarray:
    """(Z, Y, X) = (S, P, L) HU with no symmetry, so any wrong flip or transpose shows."""
    z, y, x = np.meshgrid(np.arange(4), np.arange(5), np.arange(6), indexing="ij")
    return (z * 100 + y * 10 + x - 1000).astype(np.int16)


def test_nifti_ras_and_lps_affines_give_the_same_hu(tmp_path: Path) -> None:
    hu = _contract_volume()
    zs, ys, xs = 2.5, 0.8, 0.7
    # RAS-ordered array: i → right, j → anterior, k → superior
    ras = np.transpose(hu[:, ::-1, ::-1], (2, 1, 0))
    nib.save(nib.Nifti1Image(ras, np.diag([xs, ys, zs, 1.0])), tmp_path / "ras.nii.gz")
    # LPS-ordered array: i → left, j → posterior, k → superior (RAS affine with negative x, y)
    lps = np.transpose(hu, (2, 1, 0))
    affine = np.diag([-xs, -ys, zs, 1.0])
    affine[:3, 3] = [10.0, 20.0, -50.0]
    nib.save(nib.Nifti1Image(lps, affine), tmp_path / "lps.nii")
    a, b = read_ct(tmp_path / "ras.nii.gz"), read_ct(tmp_path / "lps.nii")
    np.testing.assert_array_equal(a.hu, hu)
    np.testing.assert_array_equal(b.hu, hu)
    assert a.spacing_mm == b.spacing_mm == pytest.approx((zs, ys, xs))
    assert (a.meta["source_orientation"], b.meta["source_orientation"]) == ("RAS", "LPS")
    np.testing.assert_allclose(b.z_mm, -50 + zs * np.arange(4))
    # reversed slice order in the file (k → inferior) still reads inferior → superior
    nib.save(nib.Nifti1Image(ras[:, :, ::-1].copy(), np.diag([xs, ys, -zs, 1.0])), tmp_path / "down.nii.gz")
    np.testing.assert_array_equal(read_ct(tmp_path / "down.nii.gz").hu, hu)


@pytest.mark.parametrize("dtype", [np.int32, np.float32, np.float64, np.int16])
def test_nifti_any_dtype_becomes_int16(tmp_path: Path, dtype) -> None:
    hu = _contract_volume()
    data = np.transpose(hu, (2, 1, 0)).astype(dtype)
    nib.save(nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0])), tmp_path / "v.nii.gz")
    vol = read_ct(tmp_path / "v.nii.gz")
    assert vol.hu.dtype == np.int16
    np.testing.assert_array_equal(vol.hu, hu)


def test_nifti_scaled_storage_is_unscaled(tmp_path: Path) -> None:
    hu = _contract_volume()
    img = nib.Nifti1Image(np.transpose(hu, (2, 1, 0)).astype(np.float32), np.diag([-1.0, -1.0, 1.0, 1.0]))
    img.set_data_dtype(np.uint16)  # nibabel stores with slope/intercept
    nib.save(img, tmp_path / "scaled.nii")
    np.testing.assert_array_equal(read_ct(tmp_path / "scaled.nii").hu, hu)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.random.default_rng(0).random((4, 5, 6)).astype(np.float32), "normalised image, not HU"),
        (np.full((4, 5, 6), np.nan, np.float32), "NaN"),
        (np.full((4, 5, 6), 70000, np.int32), "int16 HU range"),
        (np.zeros((4, 5, 6, 2), np.int16), "3D volume"),
    ],
)
def test_nifti_values_that_are_not_hu(tmp_path: Path, values: np.ndarray, message: str) -> None:
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(values, np.eye(4)), path)
    with pytest.raises(ClearctError, match=message) as err:
        read_ct(path)
    assert str(path) in str(err.value)


def test_broken_nifti_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ClearctError, match="not a readable NIfTI"):
        read_ct(path)


def _write_pngs(folder: Path, hu: np.ndarray, first: int = 1) -> None:
    folder.mkdir(parents=True)
    for k, sl in enumerate(hu):
        Image.fromarray((sl.astype(np.int32) + 32768).astype(np.uint16)).save(folder / f"{first + k:03d}.png")


def test_deeplesion_png_folder_with_dl_info_above(tmp_path: Path) -> None:
    hu = _contract_volume()
    hu[0, 0, 0] = -32768  # extremes survive the offset through a signed type
    hu[0, 0, 1] = 32767
    folder = tmp_path / "Images_png" / "000001_02_01"
    _write_pngs(folder, hu, first=101)
    (tmp_path / "DL_info.csv").write_text(
        "File_name,Patient_index,Spacing_mm_px_,Patient_age\n"
        '000009_01_01_010.png,9,"0.5, 0.5, 1.0",50\n'
        '000001_02_01_103.png,1,"0.781250, 0.700000, 5.000000",61\n'
    )
    vol = read_ct(folder)
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.spacing_mm == pytest.approx((5.0, 0.7, 0.78125))
    np.testing.assert_allclose(vol.z_mm, [505, 510, 515, 520])
    assert vol.warnings == [] and vol.meta["first_slice_number"] == 101
    assert "61" not in repr(vol.meta)  # the table's age stays in the table


def test_png_folder_without_table_uses_spacing_or_warns(tmp_path: Path) -> None:
    hu = _contract_volume()
    folder = tmp_path / "scan"
    _write_pngs(folder, hu)
    (folder / "003.png").rename(folder / "009.png")
    vol = read_ct(folder)
    assert vol.spacing_mm == (1.0, 1.0, 1.0)
    assert any("pass --spacing" in w for w in vol.warnings)
    assert any("not contiguous" in w for w in vol.warnings)
    vol = read_ct(folder, spacing=2.5)
    assert vol.spacing_mm[0] == 2.5 and not any("pass --spacing" in w for w in vol.warnings)
    np.testing.assert_allclose(vol.z_mm, [2.5, 5, 10, 22.5])


def test_8_bit_png_is_refused_unless_a_mapping_is_given(tmp_path: Path, capsys) -> None:
    from clearct.cli import main

    folder = tmp_path / "shots"
    folder.mkdir()
    grey = np.array([[0, 51], [204, 255]], np.uint8)
    for k in range(3):  # ordinary 8-bit screenshots, once saved greyscale, once as RGB with equal channels
        Image.fromarray(grey).save(folder / f"{k + 1:03d}.png")
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / "003.png")
    with pytest.raises(ClearctError) as err:
        read_ct(folder)
    msg = str(err.value)
    assert "001.png" in msg and "8-bit" in msg and "16-bit" in msg and "value − 32768" in msg
    assert "--png-values" in msg
    assert main(["info", str(folder)]) == 2
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and "8-bit PNG" in out.err and "Traceback" not in out.err
    vol = read_ct(folder, png_values="window:-1000:1000")  # 0 … 255 → −1000 … 1000 HU
    np.testing.assert_array_equal(vol.hu[0], [[-1000, -600], [600, 1000]])
    assert vol.meta["png_values"] == "window:-1000:1000"
    assert main(["info", str(folder), "--png-values", "window:-1000:1000"]) == 0
    assert "window:-1000:1000" in capsys.readouterr().out
    with pytest.raises(ClearctError, match="expected deeplesion, offset:N or window:LO:HI"):
        read_ct(folder, png_values="window:5:1")
    Image.fromarray(np.stack([grey, grey, grey[::-1]], axis=-1)).save(folder / "002.png")
    with pytest.raises(ClearctError, match="002.png: a colour image"):
        read_ct(folder, png_values="window:-1000:1000")


def test_16_bit_png_in_another_encoding_is_refused_then_read_with_an_offset(tmp_path: Path) -> None:
    hu = _contract_volume()
    folder = tmp_path / "plus1024"
    folder.mkdir()
    for k, sl in enumerate(hu):  # stored as HU + 1024, as many exporters do: DeepLesion's rule would give −31k HU
        Image.fromarray((sl.astype(np.int32) + 1024).clip(0).astype(np.uint16)).save(folder / f"{k + 1:03d}.png")
    with pytest.raises(ClearctError, match="decode to at most .* HU with the DeepLesion rule.*offset:N"):
        read_ct(folder)
    vol = read_ct(folder, png_values="offset:-1024")
    np.testing.assert_array_equal(vol.hu, np.maximum(hu, -1024))


def test_npz_with_and_without_spacing(tmp_path: Path) -> None:
    hu = _contract_volume()
    np.savez_compressed(tmp_path / "a.npz", hu=hu, spacing=np.array([2.0, 0.7, 0.7]))
    vol = read_ct(tmp_path / "a.npz")
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.spacing_mm == (2.0, 0.7, 0.7) and vol.warnings == []
    np.testing.assert_allclose(vol.z_mm, [0, 2, 4, 6])
    np.savez(tmp_path / "b.npz", ct=hu.astype(np.float32), z_mm=np.array([1.0, 2.0, 4.0, 8.0]))
    vol = read_ct(tmp_path / "b.npz", spacing=3.0)
    assert vol.spacing_mm[0] == 3.0 and vol.meta["array_key"] == "ct"
    np.testing.assert_allclose(vol.z_mm, [1, 2, 4, 8])
    assert any("no 'spacing' key" in w for w in vol.warnings)
    np.savez(tmp_path / "c.npz", volume=hu)
    with pytest.raises(ClearctError, match="expected key hu or ct, found \\['volume'\\]"):
        read_ct(tmp_path / "c.npz")


def test_input_kind_dispatch(tmp_path: Path) -> None:
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "001.png").touch()
    (tmp_path / "dcm").mkdir()
    for name in ("a.nii", "a.nii.gz", "a.npz", "slice"):
        (tmp_path / name).touch()
    kinds = [input_kind(tmp_path / n) for n in ("a.nii", "a.nii.gz", "a.npz", "slice", "png", "dcm")]
    assert kinds == ["nifti", "nifti", "npz", "dicom", "png", "dicom"]


@pytest.mark.parametrize(("values", "dtype"), [(np.arange(0, 118), np.uint8), ((0, 1), np.uint8),
                                                ((0, 5, 12), np.float32)])
def test_label_maps_are_refused_as_ct(tmp_path: Path, values, dtype) -> None:
    """A segmentation saved as NIfTI (integer labels 0 … K, even as floats) is no CT: refused with one line."""
    labels = np.resize(np.asarray(values), 8 * 10 * 12).reshape(8, 10, 12).astype(dtype)
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.eye(4)), path)
    with pytest.raises(ClearctError) as info:
        read_ct(path)
    text = str(info.value)
    assert text.startswith(str(path)) and "label map" in text
    assert f"{len(values)} distinct integer values {min(values)} … {max(values)}" in text
    npz = tmp_path / "seg.npz"
    np.savez(npz, hu=labels.astype(np.int16))
    with pytest.raises(ClearctError, match="label map"):
        read_ct(npz)


def test_ct_with_air_and_a_constant_positive_block_are_told_apart(tmp_path: Path) -> None:
    ct = np.full((8, 10, 12), -1000, np.int16)
    ct[:, 3:7, 3:9] = 40  # soft tissue in air: two levels, but air below 0 HU makes it CT
    nib.save(nib.Nifti1Image(ct, np.eye(4)), tmp_path / "ct.nii.gz")
    assert read_ct(tmp_path / "ct.nii.gz").hu.min() == -1000
    cropped = np.random.default_rng(0).integers(0, 2000, (8, 10, 12)).astype(np.int16)  # > 256 levels, none < 0
    nib.save(nib.Nifti1Image(cropped, np.eye(4)), tmp_path / "bone.nii.gz")
    assert read_ct(tmp_path / "bone.nii.gz").shape == (12, 10, 8)


def test_ambiguous_folders_are_named(tmp_path: Path) -> None:
    from ct_dicom import write_series

    write_series(tmp_path / "study" / "series1", np.full((3, 8, 8), 1000, np.int16))
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), -1000, np.int16), np.eye(4)), tmp_path / "study" / "ct.nii.gz")
    with pytest.raises(ClearctError) as info:
        read_ct(tmp_path / "study")
    text = str(info.value)
    assert "ambiguous folder: DICOM files (3 in series1) and NIfTI/npz file(s) (ct.nii.gz)" in text
    assert text.startswith(str(tmp_path / "study"))
    assert read_ct(tmp_path / "study" / "series1").shape[0] == 3  # the series' own folder is not ambiguous
    only = tmp_path / "volumes"
    only.mkdir()
    for k in range(2):
        nib.save(nib.Nifti1Image(np.full((4, 4, 4), -1000, np.int16), np.eye(4)), only / f"v{k}.nii.gz")
    with pytest.raises(ClearctError, match=r"a folder of 2 NIfTI/npz file\(s\) \(v0.nii.gz, v1.nii.gz\): point at one"):
        read_ct(only)


def test_a_single_slice_is_read_with_a_warning(tmp_path: Path) -> None:
    from ct_dicom import write_series

    files = write_series(tmp_path / "s", np.full((3, 8, 8), 1000, np.int16))
    one = read_ct(files[0])
    assert one.shape[0] == 1 and any("a single slice (one file of a series? read its folder)" in w
                                     for w in one.warnings)
    assert not any("single slice" in w for w in read_ct(tmp_path / "s").warnings)

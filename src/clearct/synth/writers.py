"""Write a CTVolume as real files: a DICOM series (CT Image Storage), a NIfTI file or a DeepLesion-style PNG folder.

All writers keep the contract orientation on disk (rows anterior → posterior, columns patient right → left,
slices inferior → superior) and are atomic: a scan appears under its final name only when it is complete.
UIDs derive from the cohort seed and scan id, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from clearct.common.atomic import atomic_path
from clearct.io.volume import CTVolume

SUFFIX = {"dicom": "", "nifti": ".nii.gz", "png": ""}
PNG_OFFSET = 32768  # DeepLesion: uint16 value = HU + 32768


def scan_relpath(scan_id: str, fmt: str) -> str:
    return f"scans/{scan_id}{SUFFIX[fmt]}"


def write_scan(vol: CTVolume, target: Path, fmt: str, uid_key: str) -> None:
    """Write ``vol`` to ``target`` (a folder for dicom/png, a file for nifti)."""
    if fmt == "nifti":
        with atomic_path(target, suffix=".nii.gz") as tmp:
            write_nifti(vol, tmp)
        return
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (write_dicom if fmt == "dicom" else write_png)(vol, tmp, uid_key)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _origin_lps(vol: CTVolume) -> tuple[float, float]:
    """Patient x, y (LPS) of the first voxel centre: the image is centred on the scanner axis."""
    _, dy, dx = vol.spacing_mm
    z, y, x = vol.hu.shape
    return -(x - 1) / 2 * dx, -(y - 1) / 2 * dy


def _ds(value: float) -> str:
    return f"{value:.6g}"


def write_dicom(vol: CTVolume, folder: Path, uid_key: str) -> None:
    """One CT Image Storage file per slice; stored value = HU + 1024 (12 bits), RescaleIntercept −1024."""
    uid = lambda *parts: generate_uid(entropy_srcs=[uid_key, *map(str, parts)])  # noqa: E731
    study, series, frame = uid("study"), uid("series"), uid("frame")
    dz, dy, dx = vol.spacing_mm
    x0, y0 = _origin_lps(vol)
    thickness = vol.meta.get("slice_thickness_mm", dz)
    for k in range(vol.hu.shape[0]):
        sop = uid("sop", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.Manufacturer, ds.ManufacturerModelName = "CT", "clearct", "synthetic phantom"
        ds.PatientID, ds.PatientName = vol.patient_id, vol.patient_id
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, k + 1
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.BodyPartExamined = "CHEST" if vol.meta.get("scan_range") == "chest" else "CHEST_TO_PELVIS"
        ds.PatientPosition = "FFS"
        ds.ConvolutionKernel = str(vol.meta.get("kernel", "standard")).upper()
        ds.KVP = str(vol.meta.get("kvp", 120))
        ds.SliceThickness = _ds(thickness)
        ds.SpacingBetweenSlices = _ds(dz)
        ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(float(vol.z_mm[k]))]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = _ds(float(vol.z_mm[k]))
        ds.PixelSpacing = [_ds(dy), _ds(dx)]
        ds.Rows, ds.Columns = vol.hu.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = ["40", "-600"], ["400", "1500"]
        ds.PixelData = (vol.hu[k].astype(np.int32) + 1024).astype("<u2").tobytes()
        ds.save_as(folder / f"IM{k + 1:04d}.dcm", enforce_file_format=True)


def nifti_affine(vol: CTVolume) -> np.ndarray:
    """RAS affine for data indexed (column, row, slice): columns go to patient left (−R), rows posterior (−A)."""
    dz, dy, dx = vol.spacing_mm
    x0, y0 = _origin_lps(vol)
    return np.array([[-dx, 0, 0, -x0], [0, -dy, 0, -y0], [0, 0, dz, float(vol.z_mm[0])], [0, 0, 0, 1]])


def write_nifti(vol: CTVolume, path: Path) -> None:
    img = nib.Nifti1Image(vol.hu.transpose(2, 1, 0), nifti_affine(vol))  # a view: nibabel writes F order
    img.header.set_xyzt_units("mm")
    img.header.set_slope_inter(1.0, 0.0)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))


def write_png(vol: CTVolume, folder: Path, uid_key: str) -> None:
    """DeepLesion-style: ``NNN.png`` (001 = most inferior slice), uint16 = HU + 32768."""
    for k, plane in enumerate(vol.hu):
        Image.fromarray((plane.astype(np.int32) + PNG_OFFSET).astype(np.uint16)).save(folder / f"{k + 1:03d}.png")

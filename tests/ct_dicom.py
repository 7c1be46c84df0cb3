"""Test helper: write real DICOM CT files (single-frame series and Enhanced CT) with pydicom."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

PHI = {"PatientName": "Doe^Jane", "PatientBirthDate": "19510203", "PatientID": "SECRET-ID-42",
       "InstitutionName": "Secret Hospital", "ReferringPhysicianName": "Who^Doctor"}


def _base(sop_class: str, modality: str, series_uid: str, description: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesDescription = description
    ds.ConvolutionKernel = "B30f"
    ds.Manufacturer = "TestVendor"
    ds.KVP = 120
    for key, value in PHI.items():
        setattr(ds, key, value)
    return ds


def _pixels(ds: Dataset, stored: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = np.ascontiguousarray(stored.astype(np.int16)).tobytes()


def write_slice(
    path: Path,
    stored: np.ndarray,
    *,
    position: Sequence[float],
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.8, 0.8),
    series_uid: str = "1.2.826.0.1.1",
    description: str = "axial 2mm",
    modality: str = "CT",
    instance: int = 1,
    slope: float = 1.0,
    intercept: float = -1024.0,
    padding: int | None = None,
    padding_limit: int | None = None,
    thickness: float = 2.0,
    attrs: dict | None = None,
) -> Path:
    """One single-frame CT (or MR) image; ``stored`` is the raw (row, column) array before rescale; ``attrs``
    sets further attributes (PatientID, StudyInstanceUID, SeriesNumber, ImageType …; None deletes one)."""
    sop = CTImageStorage if modality == "CT" else MRImageStorage
    ds = _base(sop, modality, series_uid, description)
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = thickness
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if padding is not None:
        ds.PixelPaddingValue = padding
    if padding_limit is not None:
        ds.PixelPaddingRangeLimit = padding_limit
    for key, value in (attrs or {}).items():
        if value is None:
            if key in ds:
                delattr(ds, key)
        else:
            setattr(ds, key, value)
    _pixels(ds, stored)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder: Path, stored: np.ndarray, z0: float = -100.0, dz: float = 2.0, name: str = "im",
                 **kw) -> list[Path]:
    """A standard axial series: slice k of ``stored`` (Z, Y, X) at z0 + k·dz, files ``<name>NNN.dcm`` in order
    (another ``name`` puts a second series into the same folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_slice(folder / f"{name}{k:03d}.dcm", stored[k], position=(-100.0, -120.0, z0 + k * dz),
                    instance=k + 1, **kw)
        for k in range(stored.shape[0])
    ]


def write_enhanced(
    path: Path, stored: np.ndarray, positions: Sequence[Sequence[float]], *, slope: float = 1.0,
    intercept: float = -1024.0, spacing: tuple[float, float] = (0.8, 0.8),
) -> Path:
    """An Enhanced CT multi-frame file: geometry per frame, spacing/orientation/rescale in the shared group."""
    ds = _base(EnhancedCTImageStorage, "CT", "1.2.826.0.1.9", "enhanced")
    ds.NumberOfFrames = stored.shape[0]
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = list(spacing)
    measures.SliceThickness = 2.0
    shared.PixelMeasuresSequence = DicomSequence([measures])
    orient = Dataset()
    orient.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    shared.PlaneOrientationSequence = DicomSequence([orient])
    rescale = Dataset()
    rescale.RescaleSlope = slope
    rescale.RescaleIntercept = intercept
    rescale.RescaleType = "HU"
    shared.PixelValueTransformationSequence = DicomSequence([rescale])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])
    per_frame = []
    for pos in positions:
        item, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = [float(v) for v in pos]
        item.PlanePositionSequence = DicomSequence([plane])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    _pixels(ds, stored)
    ds.save_as(path, enforce_file_format=True)
    return path


def rewrite(folder: Path, *delete: str, **set_values) -> None:
    """Rewrite every file of ``folder`` without the attributes ``delete`` and with ``set_values`` (a value, or a
    function of the dataset): a stripped or edited export."""
    import pydicom

    for f in sorted(folder.iterdir()):
        ds = pydicom.dcmread(f)
        for key, value in set_values.items():
            setattr(ds, key, value(ds) if callable(value) else value)
        for key in delete:
            delattr(ds, key)
        ds.save_as(f)

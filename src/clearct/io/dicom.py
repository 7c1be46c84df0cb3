"""DICOM CT reader: a folder of single-frame CT files or an Enhanced (multi-frame) CT file → CTVolume.

Headers are read first (without pixel data) and slices grouped by series (SeriesInstanceUID, else SeriesNumber,
within one study); the series to read is chosen by a selector or the default rule (:mod:`clearct.io.series`), and
only its files are then read whole. Slices are ordered by ImagePositionPatient projected on the slice normal (never by
file name), rescaled to HU, padding mapped to −1024, clipped to the physical range [−1024, 3071] HU and oriented to
the contract. A series without ImagePositionPatient (a stripped export) is still read, with a warning in ``meta``,
when its slices can be ordered by SliceLocation or, failing that, InstanceNumber; otherwise it is refused with one
line naming the folder and the attribute (docs/inputs.md). Compressed transfer syntaxes (JPEG 2000, JPEG lossless,
RLE …) decode through pydicom's pixel handlers and the pylibjpeg plugins. Only technical attributes reach
``meta``; names, birth dates and patient ids never do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard, cast

import numpy as np
import pydicom
from nibabel import orientations
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from clearct.common.errors import ClearctError
from clearct.io.orient import contract_transform, from_contract_transform, to_contract
from clearct.io.series import SeriesInfo, choose, describe, selector_of
from clearct.io.volume import CTVolume

CT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}
PADDING_HU = -1024
HU_RANGE = (-1024, 3071)  # the physical range of 12-bit CT; lossy codecs and padding ramps leave values outside
AXIAL = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])  # rows anterior → posterior, columns right → left
_TILT_DEGREES = 0.5  # below this the stacking direction counts as the slice normal
_UNEVEN_TOLERANCE = 0.01  # relative deviation of a gap from the median gap
_DUPLICATE_MM = 1e-3


@dataclass
class Frame:
    """One 2D image (a file, or one frame of a multi-frame file) with its geometry and rescale."""

    path: Path
    ds: Dataset
    index: int | None  # frame number in a multi-frame file, None for single-frame files
    position: np.ndarray | None  # ImagePositionPatient (3,); None when absent (filled by fill_geometry)
    orientation: np.ndarray | None  # ImageOrientationPatient (6,); None when absent
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing); None when absent
    slope: float
    intercept: float
    slice_location: float | None = None
    instance: int | None = None

    @property
    def name(self) -> str:
        return self.path.name if self.index is None else f"{self.path.name}[frame {self.index}]"

    # The geometry once fill_geometry has run: it fills every None or refuses the series.
    @property
    def ipp(self) -> np.ndarray:
        assert self.position is not None, "fill_geometry places every frame"
        return self.position

    @property
    def iop(self) -> np.ndarray:
        assert self.orientation is not None, "fill_geometry orients every frame"
        return self.orientation

    @property
    def spacing(self) -> tuple[float, float]:
        assert self.pixel_spacing is not None, "fill_geometry gives every frame a pixel spacing"
        return self.pixel_spacing


SeriesGroup = tuple[str, str, str]  # (PatientID, StudyInstanceUID, series key): what one series' images share


@dataclass
class _Scan:
    """Everything read from the headers of a path before a series is chosen."""

    frames: dict[SeriesGroup, list[Frame]] = field(default_factory=lambda: defaultdict(list))
    other_modalities: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    warnings: list[str] = field(default_factory=list)
    n_seen: int = 0
    not_dicom: int = 0  # files that are no DICOM at all (a README beside the slices)


def _read_header(path: Path) -> Dataset | None:
    """The file's attributes up to its pixel data (read later, for the chosen series only), or None when it is
    not DICOM at all."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        if path.suffix.lower() != ".dcm":
            return None  # a README or licence beside the slices: not ours to complain about
        raise


def _lookup(ds: Dataset, index: int | None, group: str, keyword: str) -> Any:
    """An attribute from the per-frame, then shared functional group, then the top level (single-frame)."""
    if index is not None:
        for seq_name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            seq = ds.get(seq_name)
            if not seq:
                continue
            item = seq[index] if seq_name.startswith("PerFrame") else seq[0]
            sub = item.get(group)
            if sub and keyword in sub[0]:
                return sub[0].get(keyword)
    return ds.get(keyword)


def _vector(value: Any, n: int) -> np.ndarray | None:
    """``value`` as a float vector of length ``n``; None when absent, empty or malformed (stripped exports)."""
    try:
        vec = np.asarray(list(value), dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return vec if vec.shape == (n,) and np.all(np.isfinite(vec)) else None


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def frames_of(path: Path, ds: Dataset) -> list[Frame]:
    """The image frames of one CT file (one for classic CT, NumberOfFrames for Enhanced CT); missing geometry is
    left as None for :func:`fill_geometry` to decide on."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    multi = "PerFrameFunctionalGroupsSequence" in ds or n_frames > 1
    frames = []
    for i in range(n_frames) if multi else [None]:
        spacing = _vector(_lookup(ds, i, "PixelMeasuresSequence", "PixelSpacing"), 2)
        slope = _number(_lookup(ds, i, "PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _number(_lookup(ds, i, "PixelValueTransformationSequence", "RescaleIntercept"))
        instance = _number(ds.get("InstanceNumber"))
        frames.append(
            Frame(
                path=path,
                ds=ds,
                index=i,
                position=_vector(_lookup(ds, i, "PlanePositionSequence", "ImagePositionPatient"), 3),
                orientation=_vector(_lookup(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient"), 6),
                pixel_spacing=None if spacing is None or np.any(spacing <= 0) else (float(spacing[0]), float(spacing[1])),
                slope=slope if slope is not None else 1.0,
                intercept=intercept if intercept is not None else 0.0,
                slice_location=_number(ds.get("SliceLocation")) if i is None else None,
                instance=None if instance is None or i is not None else int(instance),
            )
        )
    return frames


def _distinct(values: Sequence[float | None]) -> TypeGuard[Sequence[float]]:
    return None not in values and len(set(values)) == len(values)


def fill_geometry(frames: list[Frame], where: Path) -> tuple[list[Frame], list[str]]:
    """Frames that all have a position, orientation and pixel spacing, and the warnings of any fallback.

    Without ImagePositionPatient (secondary captures, stripped exports) the slices are placed along the slice
    normal by SliceLocation, or else stacked by InstanceNumber (1 = most superior: the usual head-first,
    craniocaudal acquisition) at SpacingBetweenSlices/SliceThickness; a series that offers neither is refused.
    Files without a position inside a series whose other files have one are left out.
    """
    warnings: list[str] = []
    placed = [f for f in frames if f.position is not None]
    if placed and len(placed) < len(frames):
        lost = [f.name for f in frames if f.position is None]
        warnings.append(f"skipped {len(lost)} file(s) without ImagePositionPatient (e.g. {lost[0]})")
        frames = placed
    if any(f.orientation is None for f in frames):
        warnings.append("no ImageOrientationPatient: axial slices assumed (rows anterior→posterior, columns "
                        "right→left)")
        for f in frames:
            f.orientation = AXIAL.copy()
    if not placed:
        normal = np.cross(frames[0].iop[:3], frames[0].iop[3:])
        locations, instances = [f.slice_location for f in frames], [f.instance for f in frames]
        along: Sequence[float]
        if len(frames) == 1:
            along = [0.0]
            warnings.append("no ImagePositionPatient: a single slice, placed at z = 0 mm")
        elif _distinct(locations):
            along = locations
            warnings.append("no ImagePositionPatient: slices ordered and placed by SliceLocation; "
                            "in-plane origin unknown")
        elif _distinct(instances):
            gap = _single_gap(frames[0].ds)
            if gap is None:
                gap = 1.0
                warnings.append("no SpacingBetweenSlices/SliceThickness: z spacing set to 1 mm")
            rank = np.argsort(np.argsort(instances))
            along = list((len(frames) - 1 - rank) * gap)  # instance 1 = most superior
            warnings.append("no ImagePositionPatient or SliceLocation: slices ordered by InstanceNumber, assumed "
                            "to run superior→inferior (the usual acquisition); z direction not verified")
        else:
            raise ClearctError(
                f"no ImagePositionPatient (0020,0032) in {len(frames)} file(s), and neither SliceLocation nor "
                "InstanceNumber is present and distinct on every slice to order them by (a secondary capture or "
                "stripped export?)",
                where,
            )
        for f, d in zip(frames, along):
            f.position = normal * float(d)
    if any(f.pixel_spacing is None for f in frames):
        warnings.append("no PixelSpacing: in-plane spacing set to 1 mm")
        for f in frames:
            f.pixel_spacing = f.pixel_spacing or (1.0, 1.0)
    return frames, warnings


def _sop_class(ds: Dataset) -> str:
    uid = str(ds.get("SOPClassUID", "") or "")
    file_meta = getattr(ds, "file_meta", None)
    return uid or str(file_meta.get("MediaStorageSOPClassUID", "") if file_meta is not None else "")


def scan_files(files: list[Path]) -> _Scan:
    """Parse every file once: CT frames by series, counts of other modalities, warnings for unreadable files."""
    scan = _Scan()
    for path in files:
        try:
            ds = _read_header(path)
            if ds is None:
                scan.not_dicom += 1
                continue
            scan.n_seen += 1
            modality = str(ds.get("Modality", "") or "")
            if not modality and not _sop_class(ds):
                raise ValueError("no SOP class and no modality (damaged header)")
            sop = _sop_class(ds)
            is_ct = sop in CT_SOP_CLASSES or (not sop and modality == "CT")
            if not is_ct:
                # a CT secondary capture (a screenshot) is named by its SOP class, not just "CT"
                kind = f"{modality} {pydicom.uid.UID(sop).name}" if modality == "CT" and sop else modality
                scan.other_modalities[kind or sop or "unknown"] += 1
                continue
            frames = frames_of(path, ds)  # before touching the defaultdict: a failure must not leave an empty series
            scan.frames[series_group(ds)].extend(frames)
        except Exception as exc:  # a broken file must not stop the others
            scan.warnings.append(f"skipped unreadable file {path.name}: {type(exc).__name__}: {exc}")
    return scan


def series_group(ds: Dataset) -> SeriesGroup:
    """(PatientID, StudyInstanceUID, key) of an image: the key is its SeriesInstanceUID, else ``number:N`` from
    SeriesNumber (exports that strip UIDs), else empty."""
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    number = _number(ds.get("SeriesNumber"))
    key = uid or (f"number:{int(number)}" if number is not None else "")
    return str(ds.get("PatientID", "") or ""), str(ds.get("StudyInstanceUID", "") or ""), key


def series_info(group: SeriesGroup, frames: list[Frame]) -> SeriesInfo:
    """What the choice of a series looks at (:mod:`clearct.io.series`), from its headers."""
    patient, study, key = group
    ds = frames[0].ds
    value = ds.get("ImageType") or []
    image_type = [str(v).upper() for v in ([value] if isinstance(value, str) else value)]  # one value: a str
    iop = next((f.orientation for f in frames if f.orientation is not None), None)
    normal = np.cross(iop[:3], iop[3:]) if iop is not None else np.array([0.0, 0.0, 1.0])
    thickness = _number(_lookup(ds, frames[0].index, "PixelMeasuresSequence", "SliceThickness"))
    along = sorted(float(f.position @ normal) for f in frames if f.position is not None)
    if len(along) > 1:
        coverage = along[-1] - along[0] + (thickness or (along[-1] - along[0]) / (len(along) - 1))
    else:
        coverage = len(frames) * (thickness or 1.0)
    number = _number(ds.get("SeriesNumber"))
    return SeriesInfo(
        key=key, uid=str(ds.get("SeriesInstanceUID", "") or ""), number=None if number is None else int(number),
        description=str(ds.get("SeriesDescription", "") or ""), images=len(frames),
        thickness_mm=thickness if thickness and thickness > 0 else None, coverage_mm=round(coverage, 3),
        axial=bool(abs(normal[2]) > 0.7), localizer="LOCALIZER" in image_type,
        derived=bool(image_type) and (image_type[0] == "DERIVED" or "SECONDARY" in image_type[1:2]),
        study=study, patient=patient,
    )


@dataclass
class Chosen:
    """The series to read, how it was chosen, and every series the path holds."""

    info: SeriesInfo
    how: str
    frames: list[Frame]
    infos: list[SeriesInfo]

    @property
    def selector(self) -> str:
        return selector_of(self.info, self.infos)


def choose_series(scan: _Scan, series: str | None, where: Path) -> Chosen:
    """The one series to read (``series``: a selector, :mod:`clearct.io.series`; None: the default rule); a
    ClearctError that lists what is there when the choice cannot be made."""
    if not scan.frames:
        if scan.other_modalities:
            found = ", ".join(f"{m} ×{n}" for m, n in scan.other_modalities.items())
            raise ClearctError(f"no CT images (found {found}); clearct reads CT only", where)
        reasons = "; ".join(scan.warnings) if scan.warnings else "no DICOM files"
        raise ClearctError(f"no readable CT image: {reasons}", where)
    infos = {group: series_info(group, frames) for group, frames in scan.frames.items()}
    info, how = choose(list(infos.values()), series, where)
    group = next(g for g, i in infos.items() if i is info)
    return Chosen(info, how, scan.frames[group], list(infos.values()))


def _decode(frame: Frame, cache: dict[Path, np.ndarray]) -> np.ndarray:
    """The frame's stored pixels; its file is read whole here (the headers were read without pixel data)."""
    if frame.path not in cache:
        cache[frame.path] = pydicom.dcmread(frame.path).pixel_array
    arr = cache[frame.path]
    return arr if frame.index is None or arr.ndim == 2 else arr[frame.index]


def _padding_mask(stored: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Stored values that mean 'outside the scanned field': PixelPaddingValue (… PixelPaddingRangeLimit) and
    everything beyond it on the side away from the data, since lossy compression (JPEG 2000) smears the padding
    value into a spread of values past it."""
    pad = _number(ds.get("PixelPaddingValue"))
    if pad is None:
        return None
    limit = _number(ds.get("PixelPaddingRangeLimit"))
    lo, hi = (pad, pad) if limit is None else (min(pad, limit), max(pad, limit))
    if hi <= (float(stored.min()) + float(stored.max())) / 2:  # padding below the data (the usual case)
        return stored <= hi
    return stored >= lo


def to_hu(stored: np.ndarray, frame: Frame) -> np.ndarray:
    """Stored pixel values → int16 HU: rescale, padding → −1024, clip to the int16 range (the physical range
    is applied to the whole volume by :func:`read_dicom`)."""
    if frame.slope == 1.0 and frame.intercept.is_integer():  # the usual case: exact and faster in integers
        hu = stored.astype(np.int32) + int(frame.intercept)
    else:
        hu = np.rint(stored.astype(np.float32) * frame.slope + frame.intercept)
    mask = _padding_mask(stored, frame.ds)
    if mask is not None:
        hu[mask] = PADDING_HU
    return np.clip(hu, -32768, 32767).astype(np.int16)


def _normal(frames: list[Frame]) -> np.ndarray:
    iop = frames[0].iop
    return np.cross(iop[:3], iop[3:])


def clip_physical(hu: np.ndarray) -> dict[str, int]:
    """Clip ``hu`` in place to :data:`HU_RANGE`; the numbers of voxels clipped below and above (empty if none)."""
    lo, hi = HU_RANGE
    counts = {"below_-1024": int(np.count_nonzero(hu < lo)), "above_3071": int(np.count_nonzero(hu > hi))}
    np.clip(hu, lo, hi, out=hu)
    return {k: v for k, v in counts.items() if v}


def sort_frames(frames: list[Frame], where: Path) -> tuple[list[Frame], np.ndarray]:
    """Frames sorted along the slice normal and their positions along it (mm); duplicates are an error."""
    iop = frames[0].iop
    if any(not np.allclose(f.iop, iop, atol=1e-3) for f in frames):
        raise ClearctError("slices of the series have different ImageOrientationPatient", where)
    dist = np.array([f.ipp @ _normal(frames) for f in frames])
    order = np.argsort(dist, kind="stable")
    frames, dist = [frames[i] for i in order], dist[order]
    dup = np.flatnonzero(np.diff(dist) < _DUPLICATE_MM)
    if dup.size:
        a, b = frames[dup[0]], frames[dup[0] + 1]
        raise ClearctError(
            f"{dup.size} duplicate slice position(s), e.g. {a.name} and {b.name} at {dist[dup[0]]:.3f} mm "
            "along the normal (two acquisitions mixed in one series?)",
            where,
        )
    return frames, dist


def geometry_warnings(frames: list[Frame], dist: np.ndarray) -> list[str]:
    """Uneven slice gaps and gantry tilt (stacking direction off the slice normal)."""
    gaps = np.diff(dist)
    if not gaps.size:
        return []
    warnings = []
    med = float(np.median(gaps))
    if np.any(np.abs(gaps - med) > _UNEVEN_TOLERANCE * med):
        warnings.append(
            f"uneven slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm (median {med:.3f}); "
            "z_mm holds the true positions, spacing_mm[0] the median"
        )
    step = frames[-1].ipp - frames[0].ipp
    cos = abs(step @ _normal(frames)) / np.linalg.norm(step)
    tilt = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    if tilt > _TILT_DEGREES:
        warnings.append(f"gantry tilt {tilt:.1f}°: slices are sheared, not resampled")
    return warnings


def _affine(frames: list[Frame], slice_gap: float) -> np.ndarray:
    """LPS affine of the (slice, row, column) array."""
    iop = frames[0].iop
    drow, dcol = frames[0].spacing
    if len(frames) > 1:
        step = (frames[-1].ipp - frames[0].ipp) / (len(frames) - 1)
    else:
        step = np.cross(iop[:3], iop[3:]) * slice_gap
    affine = np.eye(4)
    affine[:3, 0] = step
    affine[:3, 1] = iop[3:] * drow  # down the rows
    affine[:3, 2] = iop[:3] * dcol  # along a row
    affine[:3, 3] = frames[0].ipp
    return affine


def _single_gap(ds: Dataset) -> float | None:
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(key)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return None


def technical_meta(ds: Dataset) -> dict[str, Any]:
    """Technical facts about the acquisition; deliberately no PHI (names, dates, ids, institution)."""
    keys = {
        "series_description": "SeriesDescription",
        "kernel": "ConvolutionKernel",
        "slice_thickness_mm": "SliceThickness",
        "manufacturer": "Manufacturer",
        "model": "ManufacturerModelName",
        "kvp": "KVP",
        "body_part": "BodyPartExamined",
        "contrast": "ContrastBolusAgent",
    }
    meta: dict[str, Any] = {}
    for name, keyword in keys.items():
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        if isinstance(value, pydicom.multival.MultiValue):
            value = "\\".join(str(v) for v in value)
        meta[name] = float(value) if name in ("slice_thickness_mm", "kvp") else str(value)
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None and "TransferSyntaxUID" in file_meta:
        meta["transfer_syntax"] = str(file_meta.TransferSyntaxUID.name)
    return meta


def dicom_files(path: Path) -> list[Path]:
    """The candidate files of a DICOM input: the file itself, or every non-hidden file below the folder."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR")


def centre_z(frames: list[Frame], rows: int, cols: int) -> np.ndarray:
    """Patient z of the centre of each frame (geometry filled in by :func:`fill_geometry`)."""
    iop = cast(np.ndarray, frames[0].orientation)
    drow, dcol = cast(tuple[float, float], frames[0].pixel_spacing)
    centre = iop[3:] * drow * (rows - 1) / 2 + iop[:3] * dcol * (cols - 1) / 2
    return np.array([cast(np.ndarray, f.position)[2] for f in frames]) + centre[2]


def read_dicom(path: Path | str, *, series: str | None = None) -> CTVolume:
    """Read a DICOM CT series (folder, single file, or Enhanced CT multi-frame file) as a CTVolume."""
    path = Path(path)
    scan = scan_files(dicom_files(path))
    chosen = choose_series(scan, series, path)
    frames, geometry = fill_geometry(chosen.frames, path)
    frames, dist = sort_frames(frames, path)
    warnings = list(scan.warnings) + geometry
    if scan.other_modalities:
        found = ", ".join(f"{m} ×{n}" for m, n in scan.other_modalities.items())
        warnings.append(f"ignored non-CT-image files: {found}")
    if len(chosen.infos) > 1:
        warnings.append(f"read series {chosen.info.label()} ({chosen.how}); the folder holds "
                        f"{len(chosen.infos)} CT series: {describe(chosen.infos)}")

    cache: dict[Path, np.ndarray] = {}
    slices, kept = [], []
    for i, frame in enumerate(frames):
        try:
            slices.append(to_hu(_decode(frame, cache), frame))
            kept.append(i)
        except Exception as exc:  # undecodable pixels: drop the slice, keep the series
            warnings.append(f"skipped unreadable file {frame.name}: {type(exc).__name__}: {exc}")
    if not slices:
        raise ClearctError(f"no slice could be decoded: {'; '.join(warnings)}", path)
    frames, dist = [frames[i] for i in kept], dist[kept]
    warnings += geometry_warnings(frames, dist)
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise ClearctError(f"slices differ in size {sorted(shapes)}", path)

    gaps = np.diff(dist)
    gap = round(float(np.median(gaps)), 6) if gaps.size else _single_gap(frames[0].ds)
    if gap is None:
        gap = 1.0
        warnings.append("single slice without SliceThickness/SpacingBetweenSlices: z spacing set to 1 mm")
    stacked = np.stack(slices)
    clipped = clip_physical(stacked)
    oriented = to_contract(stacked, _affine(frames, gap))
    spacing = oriented.spacing_mm
    z_mm = oriented.slice_z_mm()
    axis, flipped = oriented.input_axis_to_z()
    if axis == 0:  # an axial series: true slice positions (uneven gaps survive) and the plane spacing
        true_z = centre_z(frames, *slices[0].shape)
        z_mm = true_z[::-1] if flipped else true_z
        spacing = (gap, spacing[1], spacing[2])
    meta = {
        "format": "dicom",
        "series_uid": chosen.info.uid,
        "series_selector": chosen.selector,
        "series_rule": chosen.how,
        "sop_class": CT_SOP_CLASSES.get(_sop_class(frames[0].ds), _sop_class(frames[0].ds)),
        "n_files": len({f.path for f in frames}),
        "source_orientation": oriented.source_axcodes,
        **technical_meta(frames[0].ds),
        **({"hu_clipped": clipped} if clipped else {}),
        "warnings": warnings,
    }
    return CTVolume(
        hu=oriented.data,
        spacing_mm=spacing,
        z_mm=z_mm,
        scan_id=path.stem if path.is_file() else path.name,
        source=str(path),
        meta=meta,
    )


@dataclass
class SourceSlices:
    """The source instances of a classic axial CT series in the CTVolume's slice order, and how a slice of the
    contract grid maps back onto the source pixel grid (for objects that reference or overlay the source)."""

    datasets: list[Dataset]  # one single-frame CT dataset per CTVolume slice (index = slice_index)
    plane_transform: np.ndarray  # nibabel orientation of a contract (row, column) plane → source (row, column)
    z_mm: np.ndarray  # patient z of each slice, computed as read_dicom does (to check the match)

    def to_source_plane(self, plane: np.ndarray) -> np.ndarray:
        """A (rows, columns) array on the contract grid → the same values on the source image's pixel grid."""
        return np.ascontiguousarray(orientations.apply_orientation(plane, self.plane_transform))


def source_slices(path: Path | str, *, series: str | None = None) -> SourceSlices:
    """Read the headers of the series :func:`read_dicom` reads from ``path`` and order them exactly as it does.

    Only a series of single-frame axial images (the usual CT export) maps one instance to one CTVolume slice; an
    Enhanced (multi-frame) file, or a sagittal or coronal series whose CTVolume slices cut across the source
    images, is refused with one line.
    """
    path = Path(path)
    scan = scan_files(dicom_files(path))
    frames, _ = fill_geometry(choose_series(scan, series, path).frames, path)
    frames, dist = sort_frames(frames, path)
    if any(f.index is not None for f in frames):
        raise ClearctError("an Enhanced (multi-frame) CT file: slice references need single-frame instances", path)
    gaps = np.diff(dist)
    affine = _affine(frames, float(np.median(gaps)) if gaps.size else 1.0)
    transform = contract_transform(affine)
    if transform[0, 0] != 0:
        raise ClearctError("not an axial series: the CTVolume's slices are not the source images", path)
    flipped = transform[0, 1] < 0
    inverse = from_contract_transform(affine)
    plane = np.array([[inverse[1, 0] - 1, inverse[1, 1]], [inverse[2, 0] - 1, inverse[2, 1]]])
    datasets = []
    for f in frames[::-1] if flipped else frames:
        if not str(f.ds.get("SOPClassUID", "") or ""):  # anonymisers blank it; the file meta keeps it
            f.ds.SOPClassUID = _sop_class(f.ds)
        datasets.append(f.ds)
    z = centre_z(frames, int(frames[0].ds.Rows), int(frames[0].ds.Columns))
    return SourceSlices(datasets, plane, z[::-1] if flipped else z)

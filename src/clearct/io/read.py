"""``read_ct``: one entry point for every supported CT input, dispatching on what the path is."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clearct.common.errors import ClearctError
from clearct.io.tables import ScanRecord
from clearct.io.volume import CTVolume

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".npz")
# a label map (segmentation) has few distinct non-negative integers; CT has air near −1000 HU and thousands of levels
LABEL_MAP_LEVELS = 256


def _names(paths: list[Path], root: Path, limit: int = 3) -> str:
    shown = ", ".join(str(p.relative_to(root)) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _folder_kind(path: Path) -> str:
    """'png' or 'dicom' for a folder; ClearctError when it holds NIfTI/npz volumes, alone or beside DICOM files
    (which one is the scan cannot be guessed)."""
    from clearct.io.png import slice_files

    if slice_files(path):
        return "png"
    files = [p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")]
    volumes = sorted(p for p in files if p.name.lower().endswith(VOLUME_SUFFIXES))
    if not volumes:
        return "dicom"
    dicom = sorted(p for p in files if p not in volumes and _is_dicom_file(p))
    if not dicom:
        raise ClearctError(f"a folder of {len(volumes)} NIfTI/npz file(s) ({_names(volumes, path)}): point at one "
                           "file, or list them in a scans.csv", path)
    folders = sorted({p.parent for p in dicom})
    raise ClearctError(f"ambiguous folder: DICOM files ({len(dicom)} in {_names(folders, path) or '.'}) and "
                       f"NIfTI/npz file(s) ({_names(volumes, path)}); point at the series' folder or at one file",
                       path)


def input_kind(path: Path) -> str:
    """'dicom', 'nifti', 'png' or 'npz' for ``path``; ClearctError when it is none of them or an ambiguous
    folder."""
    if not path.exists():
        raise ClearctError("no such file or folder", path)
    name = path.name.lower()
    if path.is_file():
        if name.endswith((".nii", ".nii.gz")):
            return "nifti"
        if name.endswith(".npz"):
            return "npz"
        return "dicom"
    return _folder_kind(path)


def check_ct(volume: CTVolume, where: Path) -> CTVolume:
    """Refuse a label map read as if it were CT; warn about a single slice (the volume's warnings)."""
    hu = volume.hu
    if int(hu.min()) >= 0:  # cheap first: CT has air below 0 HU, so the count below runs almost never
        levels = np.unique(hu)
        if len(levels) <= LABEL_MAP_LEVELS:
            raise ClearctError(f"looks like a label map (segmentation), not CT: {len(levels)} distinct integer "
                               f"values {int(levels[0])} … {int(levels[-1])} and nothing below 0 HU (CT has air "
                               "near −1000 HU); clearct reads CT in Hounsfield units", where)
    if hu.shape[0] == 1:
        hint = "one file of a series? read its folder" if where.is_file() else "a one-image series?"
        volume.meta.setdefault("warnings", []).append(f"a single slice ({hint}); whole-scan models expect a volume")
    return volume


def read_ct(
    path: Path | str, *, series: str | None = None, spacing: float | None = None, png_values: str | None = None
) -> CTVolume:
    """Read a CT scan — DICOM folder or file, NIfTI file, DeepLesion PNG folder, or .npz — as a CTVolume.

    ``series`` picks one series of a DICOM folder that holds several (a SeriesInstanceUID, ``number:N`` or
    ``index:K``; None: the default rule, :mod:`clearct.io.series`); ``spacing`` (mm) is the slice
    spacing for PNG folders without a DL_info table and npz files without a spacing key; ``png_values`` says how
    the values of PNGs that are not DeepLesion's 16-bit encoding map to HU (:class:`clearct.io.png.PngValues`).
    A label map (few non-negative integer levels) is refused and a single slice warned about (:func:`check_ct`).
    What each reader accepts and refuses: docs/inputs.md.
    """
    path = Path(path)
    kind = input_kind(path)
    if kind == "nifti":
        from clearct.io.nifti import read_nifti

        return check_ct(read_nifti(path), path)
    if kind == "npz":
        from clearct.io.npz import read_npz

        return check_ct(read_npz(path, spacing=spacing), path)
    if kind == "png":
        from clearct.io.png import read_png_folder

        return check_ct(read_png_folder(path, spacing=spacing, png_values=png_values), path)
    from clearct.io.dicom import read_dicom

    return check_ct(read_dicom(path, series=series), path)


def read_scan(record: ScanRecord, *, png_values: str | None = None, spacing: float | None = None) -> CTVolume:
    """:func:`read_ct` of one row of scans.csv: its path, and its ``series_uid`` selector when the row has one."""
    return read_ct(record.path, series=record.series, png_values=png_values, spacing=spacing)

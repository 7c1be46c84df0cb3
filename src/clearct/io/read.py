"""``read_ct``: one entry point for every supported CT input, dispatching on what the path is."""

from __future__ import annotations

from pathlib import Path

from clearct.common.errors import ClearctError
from clearct.io.volume import CTVolume


def input_kind(path: Path) -> str:
    """'dicom', 'nifti', 'png' or 'npz' for ``path``; ClearctError when it is none of them."""
    if not path.exists():
        raise ClearctError("no such file or folder", path)
    name = path.name.lower()
    if path.is_file():
        if name.endswith((".nii", ".nii.gz")):
            return "nifti"
        if name.endswith(".npz"):
            return "npz"
        return "dicom"
    from clearct.io.png import slice_files

    return "png" if slice_files(path) else "dicom"


def read_ct(
    path: Path | str, *, series: str | None = None, spacing: float | None = None, png_values: str | None = None
) -> CTVolume:
    """Read a CT scan — DICOM folder or file, NIfTI file, DeepLesion PNG folder, or .npz — as a CTVolume.

    ``series`` picks a SeriesInstanceUID when a DICOM folder holds several; ``spacing`` (mm) is the slice
    spacing for PNG folders without a DL_info table and npz files without a spacing key; ``png_values`` says how
    the values of PNGs that are not DeepLesion's 16-bit encoding map to HU (:class:`clearct.io.png.PngValues`).
    What each reader accepts and refuses: docs/inputs.md.
    """
    path = Path(path)
    kind = input_kind(path)
    if kind == "nifti":
        from clearct.io.nifti import read_nifti

        return read_nifti(path)
    if kind == "npz":
        from clearct.io.npz import read_npz

        return read_npz(path, spacing=spacing)
    if kind == "png":
        from clearct.io.png import read_png_folder

        return read_png_folder(path, spacing=spacing, png_values=png_values)
    from clearct.io.dicom import read_dicom

    return read_dicom(path, series=series)

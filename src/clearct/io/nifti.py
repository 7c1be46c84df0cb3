"""NIfTI reader (nibabel): any dtype → int16 HU, axes reoriented with the affine to the contract."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.spatialimages import SpatialImage

from clearct.common.errors import ClearctError
from clearct.io.orient import LPS_TO_RAS, to_contract
from clearct.io.volume import CTVolume


def hu_from_values(values: np.ndarray, where: Path) -> np.ndarray:
    """Check that ``values`` look like Hounsfield units and round them to int16; ClearctError otherwise.

    Rejected: non-finite values, values outside the int16 range, and fractional images within [−1, 1]
    (normalised intensities, not HU). Integer label maps pass: they are valid grids, just not CT.
    """
    if values.size == 0:
        raise ClearctError("the image is empty", where)
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)):
            raise ClearctError("the image holds NaN or infinite values, not HU", where)
        lo, hi = float(values.min()), float(values.max())
        if lo >= -1.0 and hi <= 1.0 and not np.all(values == np.round(values)):
            raise ClearctError(f"values lie in [{lo:.3g}, {hi:.3g}]: a normalised image, not HU", where)
    lo, hi = float(values.min()), float(values.max())
    if lo < -32768 or hi > 32767:
        raise ClearctError(f"values {lo:.6g} … {hi:.6g} exceed the int16 HU range", where)
    return np.rint(values).astype(np.int16) if np.issubdtype(values.dtype, np.floating) else values.astype(np.int16)


def read_nifti(path: Path | str) -> CTVolume:
    """Read a .nii / .nii.gz CT volume (scaling slope/intercept applied) in contract orientation."""
    path = Path(path)
    try:
        img = nib.load(path)
        if not isinstance(img, SpatialImage):  # a file nibabel reads that holds no voxel grid (e.g. CIFTI-2)
            raise TypeError(f"{type(img).__name__} holds no volume")
        values = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise ClearctError(f"not a readable NIfTI file: {type(exc).__name__}: {exc}", path) from exc
    if values.ndim == 4 and values.shape[3] == 1:
        values = values[..., 0]
    if values.ndim != 3:
        raise ClearctError(f"expected a 3D volume, got shape {values.shape}", path)
    hu = hu_from_values(values, path)
    oriented = to_contract(hu, LPS_TO_RAS @ img.affine)
    warnings = []
    cosines = np.abs(oriented.affine[:3, :3]) / np.array(oriented.spacing_mm)
    if np.any(cosines.max(axis=0) < 1 - 1e-4):
        warnings.append("oblique affine: axes permuted/flipped to the nearest orientation, not resampled")
    name = path.name.removesuffix(".gz").removesuffix(".nii")
    return CTVolume(
        hu=oriented.data,
        spacing_mm=oriented.spacing_mm,
        z_mm=oriented.slice_z_mm(),
        scan_id=name,
        source=str(path),
        meta={
            "format": "nifti",
            "source_dtype": str(values.dtype),
            "source_orientation": oriented.source_axcodes,
            "warnings": warnings,
        },
    )

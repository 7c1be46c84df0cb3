"""``.npz`` reader (RAD-ChestCT style): an HU array (Z, Y, X) plus optional spacing and slice positions.

Keys: ``hu`` (RAD-ChestCT files use ``ct``, also accepted) — HU already in the contract orientation;
optional ``spacing`` (3,) mm as (z, y, x); optional ``z_mm`` (Z,) slice positions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clearct.common.errors import ClearctError
from clearct.io.nifti import hu_from_values
from clearct.io.volume import CTVolume

ARRAY_KEYS = ("hu", "ct")


def read_npz(path: Path | str, *, spacing: float | None = None) -> CTVolume:
    """Read an npz HU volume; without a ``spacing`` key, ``spacing`` (mm) sets z and a warning is recorded."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise ClearctError(f"not a readable .npz file: {type(exc).__name__}: {exc}", path) from exc
    key = next((k for k in ARRAY_KEYS if k in arrays), None)
    if key is None:
        raise ClearctError(f"no HU array: expected key {' or '.join(ARRAY_KEYS)}, found {sorted(arrays)}", path)
    values = arrays[key]
    if values.ndim != 3:
        raise ClearctError(f"{key!r} must be (Z, Y, X), got shape {values.shape}", path)
    warnings = []
    if "spacing" in arrays:
        sp = np.asarray(arrays["spacing"], dtype=np.float64).ravel()
        if sp.shape != (3,) or np.any(sp <= 0):
            raise ClearctError(f"'spacing' must hold 3 positive values (z, y, x), got {sp.tolist()}", path)
        spacing_mm = (float(sp[0]), float(sp[1]), float(sp[2]))
    else:
        spacing_mm = (float(spacing) if spacing else 1.0, 1.0, 1.0)
        warnings.append(f"no 'spacing' key: spacing set to {spacing_mm} mm")
    if "z_mm" in arrays:
        z_mm = np.asarray(arrays["z_mm"], dtype=np.float64)
        if z_mm.shape != (values.shape[0],) or np.any(np.diff(z_mm) <= 0):
            raise ClearctError(f"'z_mm' must increase and have {values.shape[0]} entries", path)
    else:
        z_mm = np.arange(values.shape[0]) * spacing_mm[0]
    return CTVolume(
        hu=hu_from_values(values, path),
        spacing_mm=spacing_mm,
        z_mm=z_mm,
        scan_id=path.stem,
        source=str(path),
        meta={"format": "npz", "array_key": key, "warnings": warnings},
    )

"""The CTVolume data contract shared by every reader and stage (docs/design.md, "Data contracts")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CTVolume:
    """A CT scan in Hounsfield units, in the contract orientation.

    ``hu`` is int16 (Z, Y, X): slices by increasing patient z (inferior → superior), rows anterior → posterior,
    columns patient-right → patient-left (radiological display). ``spacing_mm`` is (z, y, x); ``z_mm`` holds the
    patient z of every slice. ``meta`` carries technical facts only (series UID, kernel, thickness, warnings),
    never names or birth dates.
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    z_mm: np.ndarray
    scan_id: str = ""
    patient_id: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"CTVolume.hu must be (Z, Y, X), got shape {self.hu.shape}")
        if self.hu.dtype != np.int16:
            raise ValueError(f"CTVolume.hu must be int16 HU, got {self.hu.dtype}")
        self.z_mm = np.asarray(self.z_mm, dtype=np.float64)
        if self.z_mm.shape != (self.hu.shape[0],):
            raise ValueError(f"z_mm has {self.z_mm.shape[0]} entries for {self.hu.shape[0]} slices")
        self.spacing_mm = tuple(float(s) for s in self.spacing_mm)  # type: ignore[assignment]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    @property
    def warnings(self) -> list[str]:
        return list(self.meta.get("warnings", []))

    def provenance(self) -> dict[str, Any]:
        """Where the volume came from, as feature-file attributes: the source path, its slices and spacing, and for
        a DICOM series the selector that reads it again (``series``) and how it was chosen (``series_rule``)."""
        out: dict[str, Any] = {"source": str(self.source), "n_slices": int(self.hu.shape[0]),
                               "spacing_mm": np.asarray(self.spacing_mm)}
        for attr, key in (("series", "series_selector"), ("series_uid", "series_uid"), ("series_rule", "series_rule")):
            if self.meta.get(key) is not None:
                out[attr] = str(self.meta[key])
        return out

"""Bring any voxel grid with a patient-space affine to the CTVolume contract orientation.

The contract (docs/design.md, "Data contracts") is array axes (Z, Y, X) = (inferior → superior, anterior →
posterior, right → left), which in DICOM's LPS patient coordinates is axis 0 → +S, axis 1 → +P, axis 2 → +L.
Readers hand over their array with an LPS affine (DICOM natively; NIfTI after flipping RAS to LPS) and this
module permutes and flips axes — never resamples — using nibabel's orientation algebra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel import orientations

# nibabel's orientation rows: (world axis, +1/−1) for each array axis; LPS world axes 0=L, 1=P, 2=S.
_CONTRACT = np.array([[2, 1], [1, 1], [0, 1]], dtype=float)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Oriented:
    """A grid in contract orientation: data (Z, Y, X), its LPS affine, and where each input axis went."""

    data: np.ndarray
    affine: np.ndarray
    source_axcodes: str  # directions of the input array axes in RAS letters, e.g. "RAS" or "LPS"
    transform: np.ndarray  # nibabel orientation transform applied to the input axes

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return float(norms[0]), float(norms[1]), float(norms[2])

    def slice_z_mm(self) -> np.ndarray:
        """Patient z (mm, LPS = RAS z) of the centre of every output slice."""
        z, y, x = self.data.shape
        idx = np.stack([np.arange(z), np.full(z, (y - 1) / 2), np.full(z, (x - 1) / 2), np.ones(z)])
        return (self.affine @ idx)[2]

    def input_axis_to_z(self) -> tuple[int, bool]:
        """(input axis that became axis 0, whether it was reversed)."""
        axis = int(np.flatnonzero(self.transform[:, 0] == 0)[0])
        return axis, bool(self.transform[axis, 1] < 0)


def contract_transform(affine_lps: np.ndarray) -> np.ndarray:
    """nibabel orientation transform from the axes of a grid with this LPS affine to the contract axes."""
    return orientations.ornt_transform(orientations.io_orientation(affine_lps), _CONTRACT)


def from_contract_transform(affine_lps: np.ndarray) -> np.ndarray:
    """The inverse of :func:`contract_transform`: contract axes back to the grid's own axes."""
    return orientations.ornt_transform(_CONTRACT, orientations.io_orientation(affine_lps))


def to_contract(data: np.ndarray, affine_lps: np.ndarray) -> Oriented:
    """Permute/flip ``data`` (3D) so its axes run S, P, L; the affine is updated to match."""
    transform = contract_transform(affine_lps)
    out = orientations.apply_orientation(data, transform)
    new_affine = affine_lps @ orientations.inv_ornt_aff(transform, data.shape)
    codes = "".join(orientations.aff2axcodes(LPS_TO_RAS @ affine_lps))
    return Oriented(np.ascontiguousarray(out), new_affine, codes, transform)

"""One synthetic patient: grid, anatomy, findings, acquisition → a CTVolume plus its truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clearct.config import SynthFindings
from clearct.io.volume import CTVolume
from clearct.synth.anatomy import Anatomy, draw_anatomy, sample_anatomy
from clearct.synth.canvas import SLAB_VOXELS, Canvas
from clearct.synth.findings import Findings, draw_findings
from clearct.synth.noise import Acquisition, acquire


@dataclass
class Phantom:
    volume: CTVolume
    organ: np.ndarray  # uint8 organ codes (clearct.synth.canvas), same grid as volume.hu
    findings: Findings
    anatomy: Anatomy
    scan_range: str  # "chest" or "cap" (chest-abdomen-pelvis)


def make_phantom(seed: np.random.SeedSequence, *, patient_id: str, scan_id: str, size: int, slices: int,
                 chest_share: float, knobs: SynthFindings, acq: Acquisition, with_findings: bool = True,
                 pixel_mm: tuple[float, float] | None = None, slice_mm: tuple[float, float] | None = None,
                 slab_voxels: int = SLAB_VOXELS) -> Phantom:
    """Render one patient. Anatomy, findings and noise use separate child streams of ``seed``, so the same
    patient rendered ``with_findings=False`` has identical anatomy and noise (the tests compare the two).

    Geometry: by default the field of view fits the body (pixel = FOV / ``size``) and ``slices`` slices span the
    scan range. ``pixel_mm`` (lo, hi) draws the pixel spacing per patient instead (a clinical reconstruction: the
    FOV is ``size`` × pixel, a large patient may be cut at the edges, as on a scanner); ``slice_mm`` (lo, hi) draws
    the slice spacing and the number of slices follows from the scan range (about 350–800 mm). Both come from the
    scan-range stream after its draws, so leaving them unset keeps every other patient's phantom as it was.
    ``slab_voxels`` sizes the slabs the volume is worked on in (it changes memory, not the result)."""
    s_anat, s_find, s_noise, s_range = (np.random.default_rng(s) for s in seed.spawn(4))
    anat = sample_anatomy(s_anat)
    chest = s_range.random() < chest_share
    top = anat.lung_apex + s_range.uniform(15.0, 40.0)
    bottom = anat.dome_right - s_range.uniform(60.0, 90.0) if chest else anat.femoral_heads - s_range.uniform(25, 50)
    # rounded so DICOM decimal strings hold them exactly
    px = round(s_range.uniform(*pixel_mm) if pixel_mm else anat.field_of_view_mm / size, 4)
    if slice_mm:
        dz = round(s_range.uniform(*slice_mm), 3)
        slices = max(int(round((top - bottom) / dz)) + 1, 2)
    else:
        dz = round((top - bottom) / max(slices - 1, 1), 3)
    bottom = round(bottom, 2)
    z = bottom + dz * np.arange(slices)
    xy = (np.arange(size) - (size - 1) / 2) * px
    cv = Canvas(z, xy, xy, slab_voxels=slab_voxels)
    torso = draw_anatomy(cv, anat, s_anat)
    findings = draw_findings(cv, torso, anat, s_find, knobs) if with_findings else Findings()
    hu = acquire(cv.hu, (dz, px, px), acq, s_noise, slab_voxels=slab_voxels)
    scan_range = "chest" if chest else "cap"
    meta = {"kernel": acq.kernel, "slice_thickness_mm": round(dz * max(acq.thickness_factor, 1.0), 3),
            "kvp": acq.kvp, "scan_range": scan_range, "synthetic": True}
    vol = CTVolume(hu=hu, spacing_mm=(dz, px, px), z_mm=z, scan_id=scan_id, patient_id=patient_id,
                   source="clearct.synth", meta=meta)
    return Phantom(vol, cv.organ, findings, anat, scan_range)

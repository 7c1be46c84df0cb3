"""Findings with known truth: located lesions (Task 1), lung abnormalities (Task 2) and stage (Task 3).

Each finding is painted onto the canvas after the anatomy; what was drawn is returned as data, so the label
tables are written from what is in the image, never from what was merely intended.

Findings work on the whole canvas, but nothing here makes a volume-sized temporary: candidate voxels are counted
and drawn slice by slice (:meth:`Canvas.pick`, the voxel ``np.flatnonzero`` of the whole mask would give), masks and
volume-wide random fields are made slab by slab, and the distance to the lung surface (fibrosis) is computed on
slabs with a halo of the 14 mm it is needed to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from clearct.config import SynthFindings
from clearct.synth import canvas as C
from clearct.synth.anatomy import Anatomy, Spacing, Torso, hilum, smooth_field
from clearct.synth.canvas import Canvas
from clearct.synth.fields import SlabField
from clearct.synth.labels import LOCATIONS, LUNG_FINDINGS

_LUNG = (C.LUNG, C.LUNG_VESSEL)


@dataclass
class Lesion:
    location: str
    center_mm: tuple[float, float, float]
    diameter_mm: float
    lesion_hu: float
    host_hu: float
    host_codes: tuple[int, ...]
    key_slice: int = -1
    slice_range: tuple[int, int] = (-1, -1)  # first and last slice (inclusive) the lesion covers
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # x1, y1, x2, y2 in pixels (x2, y2 exclusive)


@dataclass
class Findings:
    lesions: list[Lesion] = field(default_factory=list)
    lung: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LUNG_FINDINGS, 0))
    primary_tumour: int = 0
    stage_high: int = 0

    @property
    def locations(self) -> dict[str, int]:
        present = {les.location for les in self.lesions}
        return {loc: int(loc in present) for loc in LOCATIONS}


def _hosts(cv: Canvas, anat: Anatomy, loc: str) -> tuple[tuple[int, ...], np.ndarray]:
    """Organ codes a lesion of this location lives in, and the candidate centre voxels."""
    z = cv.coords()[0]
    codes = {
        "lung": _LUNG, "liver": (C.LIVER,), "kidney": (C.KIDNEY,), "bone": (C.MARROW,),
        "mediastinum": (C.MEDIASTINUM,), "abdomen": (C.VISCERAL_FAT, C.BOWEL), "soft_tissue": (C.FAT, C.MUSCLE),
        "pelvis": (C.VISCERAL_FAT, C.BOWEL, C.BLADDER),
    }[loc]
    cand = np.isin(cv.organ, codes)
    if loc == "abdomen":
        cand &= z > anat.iliac_crest
    elif loc == "pelvis":
        cand &= z <= anat.iliac_crest
    elif loc in ("lung", "soft_tissue"):  # centred in lung parenchyma / subcutaneous fat
        cand &= cv.organ == codes[0]
    elif loc == "mediastinum":  # between the lungs, not the neck above them
        x = cv.coords()[2]
        cand &= (z > anat.dome_left) & (z < anat.lung_apex - 50.0) & (np.abs(x - anat.shift_x) < 45.0)
    return codes, cand


# Lesions that grow beyond their organ, as real ones do: a renal mass bulges into the perirenal fat (exophytic), a
# lytic bone metastasis breaks through the cortex into the paraspinal soft tissue. For these a share of the volume
# may lie outside the host (the rest must be inside), and the lesion is painted there too; the others stay ≥ 70 %
# inside and are painted only inside their host.
_GROWS_INTO = {"kidney": (C.VISCERAL_FAT, C.FAT, C.MUSCLE), "bone": (C.CORTEX, C.MUSCLE, C.FAT, C.VISCERAL_FAT)}
_INSIDE_SHARE = {"kidney": 0.5, "bone": 0.5}
# Largest diameter per location as a multiple of the body scale (a vertebral body, a kidney with its mass)
_MAX_DIAMETER = {"bone": 45.0, "kidney": 55.0}

# Nominal lesion HU per location (the host's nominal HU comes from the canvas).
_LESION_HU = {"lung": 35.0, "liver": 45.0, "kidney": 25.0, "mediastinum": 45.0, "abdomen": 45.0,
              "pelvis": 45.0, "soft_tissue": 40.0}


def place_lesion(cv: Canvas, loc: str, diameter: float, rng: np.random.Generator, anat: Anatomy,
                 knobs: SynthFindings, lesion_hu: float | None = None) -> Lesion | None:
    """Put one ellipsoidal lesion in the location's organ; None when the organ is not in the scan range."""
    codes = _hosts(cv.slab(0, 1), anat, loc)[0]
    host_mask = lambda s: _hosts(s, anat, loc)[1]  # noqa: E731
    counts = cv.counts(host_mask)
    if counts.sum() == 0:
        return None
    dz = abs(cv.z[1] - cv.z[0]) if cv.z.size > 1 else 1.0
    px = cv.x[1] - cv.x[0]
    for attempt in range(12):
        k, i, j = cv.pick(host_mask, counts, rng)
        center = np.array([cv.x[j] + rng.uniform(-0.5, 0.5) * px, cv.y[i] + rng.uniform(-0.5, 0.5) * px,
                           cv.z[k] + rng.uniform(-0.25, 0.25) * dz])
        d = diameter * (0.85 ** attempt)
        axes = d / 2 * np.array([1.0, rng.uniform(0.75, 1.25), rng.uniform(0.75, 1.25)])
        box, w = cv.ellipsoid(center, axes, edge=1.0)
        assert box is not None and w is not None  # the centre is a voxel of the grid
        inside = np.isin(cv.organ[box], codes)
        outside_body = np.isin(cv.organ[box], (C.AIR, C.TABLE))
        share = _INSIDE_SHARE.get(loc, 0.7)
        if (w * inside).sum() >= share * w.sum() and (w * outside_body).sum() < 0.01 * w.sum() and (w > 0.5).any():
            break
    else:
        return None
    host = float(np.median(cv.hu[box][inside & (w > 0.5)]))
    if lesion_hu is None:
        lesion_hu = _LESION_HU.get(loc) or (45.0 if rng.random() < 0.6 else host + 450.0)  # bone: lytic/sclerotic
    value = host + knobs.lesion_contrast * (lesion_hu - host)
    texture = gaussian_filter(rng.standard_normal(w.shape).astype(np.float32), 1.0)
    texture *= 0.12 * abs(value - host) / max(float(texture.std()), 1e-6)
    weight = w * (inside | np.isin(cv.organ[box], _GROWS_INTO.get(loc, ())))
    cv.paint(box, weight, value + texture, C.LESION)
    lab = (weight > 0.5)
    area = lab.sum(axis=(1, 2))
    key = int(np.argmax(area))
    rows, cols = np.nonzero(lab[key])
    centre_mm = (float(center[0]), float(center[1]), float(center[2]))
    les = Lesion(loc, centre_mm, float(d), float(value), host, codes)
    les.key_slice = box[0].start + key
    covered = np.flatnonzero(area)
    les.slice_range = (box[0].start + int(covered[0]), box[0].start + int(covered[-1]))
    les.box = (box[2].start + int(cols.min()), box[1].start + int(rows.min()),
               box[2].start + int(cols.max()) + 1, box[1].start + int(rows.max()) + 1)
    return les


def draw_findings(cv: Canvas, t: Torso, anat: Anatomy, rng: np.random.Generator, knobs: SynthFindings) -> Findings:
    """Sample and paint every finding for one patient (lung abnormalities first, then the located lesions)."""
    out = Findings()
    spacing = (abs(cv.z[1] - cv.z[0]) if cv.z.size > 1 else 5.0, cv.y[1] - cv.y[0], cv.x[1] - cv.x[0])
    has_lung = any(bool((s.organ == C.LUNG).any()) for s in cv.slabs())
    wanted = {name: has_lung and rng.random() < knobs.lung_prevalence for name in LUNG_FINDINGS}
    out.primary_tumour = int(has_lung and rng.random() < knobs.primary_tumour)
    out.stage_high = int(out.primary_tumour and rng.random() < knobs.stage_high_share)
    side = int(rng.choice((-1, 1)))
    if out.stage_high and rng.random() < 0.4:
        wanted["effusion"] = True
    for name in LUNG_FINDINGS:
        if wanted[name]:
            out.lung[name] = int(_LUNG_DRAW[name](cv, t, anat, rng, spacing, side))
    lo, hi = knobs.lesion_size_mm
    for loc in LOCATIONS:
        if rng.random() >= knobs.location_prevalence:
            continue
        for _ in range(1 + int(rng.random() < 0.3)):
            size = np.exp(rng.uniform(np.log(lo), np.log(hi)))
            if loc in _MAX_DIAMETER:
                size = min(size, _MAX_DIAMETER[loc] * anat.scale)
            les = place_lesion(cv, loc, size, rng, anat, knobs)
            if les is not None:
                out.lesions.append(les)
    if out.primary_tumour:
        # low stage stays ≤ 25 mm even when --lesion-size-mm starts above it
        size = rng.uniform(30.0, 50.0) if out.stage_high else rng.uniform(min(max(lo, 10.0), 25.0), 25.0)
        les = place_lesion(cv, "lung", size, rng, anat, knobs, lesion_hu=40.0)
        if les is not None:
            out.lesions.append(les)
        if out.stage_high and rng.random() < 0.6:
            node = place_lesion(cv, "mediastinum", rng.uniform(18.0, 30.0), rng, anat, knobs)
            if node is not None:
                out.lesions.append(node)
    if any(les.location == "lung" for les in out.lesions):
        out.lung["nodule"] = 1  # every solid lung lesion is a nodule/mass in the Task 2 sense
    return out


# --- lung abnormalities: each returns whether it drew anything ---------------------------------------------------
def _lung_mask(cv: Canvas) -> np.ndarray:
    return np.isin(cv.organ, _LUNG)


def _field(cv: Canvas, rng: np.random.Generator, sigma_mm: float, spacing: Spacing) -> SlabField:
    """``smooth_field(rng, cv.hu.shape, sigma_mm, spacing)`` delivered slab by slab."""
    sigmas = (sigma_mm / spacing[0], sigma_mm / spacing[1], sigma_mm / spacing[2])
    return SlabField(rng, cv.hu.shape, sigmas, mode="nearest", slab=cv.slab_depth())


def _emphysema(cv: Canvas, t: Torso, anat: Anatomy, rng: np.random.Generator, spacing: Spacing,
               side: int) -> bool:
    def upper(s: Canvas) -> np.ndarray:
        return _lung_mask(s) & (s.coords()[0] > anat.dome_right + 0.4 * (anat.lung_apex - anat.dome_right))

    smooth = _field(cv, rng, 4.0, spacing)
    counts, drawn = np.zeros(cv.z.size, np.int64), False
    for s in cv.slabs():
        up = upper(s)
        holes = up & (smooth.normalised(s.k0, s.k0 + s.z.size) > 0.6)
        s.paint(s.full, holes, -975.0)
        drawn |= bool(holes.any())
        counts[s.k0 : s.k0 + s.z.size] = up.sum(axis=(1, 2))
    for _ in range(3 if counts.sum() else 0):  # a few bullae
        k, i, j = cv.pick(upper, counts, rng)
        cv.paint(*cv.ellipsoid((cv.x[j], cv.y[i], cv.z[k]), rng.uniform(8, 16, 3), 1.0), -995.0, inside=_LUNG)
    return drawn


def _posterior_edge(lung: np.ndarray, cv: Canvas) -> np.ndarray:
    """y (mm) of the most posterior lung voxel in every (z, x) column, broadcast as (Z,1,X)."""
    last = lung.shape[1] - 1 - np.argmax(lung[:, ::-1, :], axis=1)
    return np.where(lung.any(axis=1), cv.y[last], -np.inf)[:, None, :]


def _side_lung_base(cv: Canvas, t: Torso, side: int) -> tuple[float | None, Callable[[Canvas], np.ndarray]]:
    """The lung of one side (a slab mask) and the z of its lowest slice (None: no lung on that side)."""
    def lung(s: Canvas) -> np.ndarray:
        return _lung_mask(s) & ((s.coords()[2] - t.x0) * side > 0)

    present = cv.counts(lung) > 0
    return (float(cv.z[present].min()) if present.any() else None), lung


def _effusion(cv: Canvas, t: Torso, anat: Anatomy, rng: np.random.Generator, spacing: Spacing,
              side: int) -> bool:
    base, lung_of = _side_lung_base(cv, t, side)
    if base is None:
        return False
    deepest, value, drawn = rng.uniform(25.0, 55.0), rng.uniform(5.0, 20.0), False
    for s in cv.slabs():
        z, y, _ = s.coords()
        lung = lung_of(s)
        depth = deepest * np.clip(1 - (z - base) / 180.0, 0, 1)
        fluid = lung & (y >= _posterior_edge(lung, s) - depth)
        s.paint(s.full, fluid, value, C.EFFUSION)
        drawn |= bool(fluid.any())
    return drawn


def _atelectasis(cv: Canvas, t: Torso, anat: Anatomy, rng: np.random.Generator, spacing: Spacing,
                 side: int) -> bool:
    """Dependent / compressive atelectasis: a dense band along the posterior lower lung."""
    base, lung_of = _side_lung_base(cv, t, side)
    if base is None:
        return False
    top, thickness, drawn = base + rng.uniform(80.0, 130.0), rng.uniform(12.0, 22.0), False
    for s in cv.slabs():
        z, y, _ = s.coords()
        lung = lung_of(s)
        band = lung & (z < top)
        band &= y >= _posterior_edge(lung, s) - thickness
        s.paint(s.full, band, 45.0, C.LUNG)
        drawn |= bool(band.any())
    return drawn


SUBPLEURAL_MM = 14.0  # fibrosis lies within this distance of the lung surface


def _surface_depth(cv: Canvas, k0: int, k1: int, spacing: Spacing) -> np.ndarray:
    """Distance (mm) of slices ``k0:k1`` to the nearest non-lung voxel, exact where it is below
    :data:`SUBPLEURAL_MM`: the transform runs on the slices within that distance, cut in-plane to the lung's
    bounding box plus one voxel (the nearest non-lung voxel of a lung voxel is never outside that ring)."""
    halo = int(np.ceil(SUBPLEURAL_MM / spacing[0])) + 1
    a, b = max(0, k0 - halo), min(cv.z.size, k1 + halo)
    lung = _lung_mask(cv.slab(a, b))
    depth = np.zeros((k1 - k0, cv.y.size, cv.x.size))
    rows, cols = np.flatnonzero(lung.any(axis=(0, 2))), np.flatnonzero(lung.any(axis=(0, 1)))
    if rows.size == 0:
        return depth
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, cv.y.size)
    c0, c1 = max(cols[0] - 1, 0), min(cols[-1] + 2, cv.x.size)
    depth[:, r0:r1, c0:c1] = distance_transform_edt(lung[:, r0:r1, c0:c1], sampling=spacing)[k0 - a : k1 - a]
    return depth


def _fibrosis(cv: Canvas, t: Torso, anat: Anatomy, rng: np.random.Generator, spacing: Spacing,
              side: int) -> bool:
    """Subpleural basal reticulation: a net of thin dense lines near the lung surface."""
    smooth = _field(cv, rng, 2.5, spacing)
    drawn = False
    for s in cv.slabs():
        k0, k1 = s.k0, s.k0 + s.z.size
        z = s.coords()[0]
        region = _lung_mask(s) & (_surface_depth(cv, k0, k1, spacing) < SUBPLEURAL_MM)
        region &= z < anat.dome_right + 0.55 * (anat.lung_apex - anat.dome_right)
        net = region & (np.abs(smooth.normalised(k0, k1)) < 0.25)
        s.paint(s.full, net, -200.0)
        drawn |= bool(net.any())
    return drawn


def _opacity(cv: Canvas, t: Torso, anat: Anatomy, rng: np.random.Generator, spacing: Spacing,
             side: int) -> bool:
    """Ground-glass opacity: patchy haze that raises lung attenuation but keeps vessels visible."""
    k, i, j = cv.pick(_lung_mask, cv.counts(_lung_mask), rng)
    box, w = cv.ellipsoid((cv.x[j], cv.y[i], cv.z[k]), rng.uniform(35.0, 70.0, 3), 5.0)
    assert box is not None and w is not None  # centred on a voxel of the grid
    patch = w * np.isin(cv.organ[box], _LUNG) * (smooth_field(rng, w.shape, 6.0, spacing) > -0.3)
    cv.hu[box] += patch * 300.0
    return bool((patch > 0.5).any())


def _calcification(cv: Canvas, t: Torso, anat: Anatomy, rng: np.random.Generator, spacing: Spacing,
                   side: int) -> bool:
    """Calcified granulomas in the lung and a calcified hilar node."""
    def lung(s: Canvas) -> np.ndarray:
        return s.organ == C.LUNG

    counts = cv.counts(lung)
    drawn = False
    for _ in range(int(rng.integers(2, 5))):
        k, i, j = cv.pick(lung, counts, rng)
        box, w = cv.ellipsoid((cv.x[j], cv.y[i], cv.z[k]), np.full(3, rng.uniform(2.5, 5.0)), 0.8)
        assert w is not None  # centred on a voxel of the grid
        cv.paint(box, w, rng.uniform(500.0, 900.0), inside=_LUNG)
        drawn |= bool((w > 0.5).any())
    node = hilum(t, anat, side) + (0.0, 12.0, -10.0)
    cv.paint(*cv.ellipsoid(node, (6.0, 6.0, 6.0), 0.8), 700.0, inside=(C.MEDIASTINUM, C.LUNG, C.LUNG_VESSEL))
    return drawn


def _nodule(cv: Canvas, t: Torso, anat: Anatomy, rng: np.random.Generator, spacing: Spacing,
            side: int) -> bool:
    """One to three small solid nodules (6–12 mm), centred on a slice so they are seen."""
    codes = _hosts(cv.slab(0, 1), anat, "lung")[0]
    host_mask = lambda s: _hosts(s, anat, "lung")[1]  # noqa: E731
    counts = cv.counts(host_mask)
    drawn = False
    for _ in range(int(rng.integers(1, 4))):
        k, i, j = cv.pick(host_mask, counts, rng)
        box, w = cv.ellipsoid((cv.x[j], cv.y[i], cv.z[k]), np.full(3, rng.uniform(3.0, 6.0)), 0.8)
        assert w is not None  # centred on a voxel of the grid
        cv.paint(box, w, 35.0, inside=codes)
        drawn |= bool((w > 0.5).any())
    return drawn


_LUNG_DRAW = {"emphysema": _emphysema, "effusion": _effusion, "atelectasis": _atelectasis, "fibrosis": _fibrosis,
              "opacity": _opacity, "calcification": _calcification, "nodule": _nodule}

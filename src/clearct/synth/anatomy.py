"""Procedural torso anatomy in patient millimetres (z = 0 at the femoral heads, growing towards the head).

Every structure is a vectorised shape on a :class:`~clearct.synth.canvas.Canvas`; the per-patient variation lives
in :class:`Anatomy` (body size, fat, organ positions, bone density, diaphragm height), drawn from one generator.
HU values are portal-venous-phase CT: fat −100, muscle +55, liver +105, blood +150, lung −860, cortex +700…1000.

The torso is painted in z-slabs (:meth:`Canvas.slabs`) in two passes — everything up to the bowel, then the bowel,
bones and texture — because whether the bowel is drawn (and so draws its two random fields) depends on the whole
scan. Every step is voxel-wise or box-wise, the random vessel trees are drawn first, and the volume-wide random
fields come slab by slab from :class:`~clearct.synth.fields.SlabField`, so the result does not depend on the slab
size (tests/test_synth_slabs.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.ndimage import gaussian_filter

from clearct.synth import canvas as C
from clearct.synth.canvas import Canvas
from clearct.synth.fields import SlabField

# Lean body half-widths (lateral a, anterior b) along z, before subcutaneous fat; the torso narrows at the apex.
_Z_KNOTS = np.array([-150.0, 40.0, 180.0, 300.0, 450.0, 600.0, 720.0, 820.0])
_A_KNOTS = np.array([150.0, 165.0, 158.0, 148.0, 150.0, 156.0, 150.0, 140.0])
_B_KNOTS = np.array([100.0, 102.0, 98.0, 94.0, 100.0, 102.0, 96.0, 90.0])
_FAT_KNOTS = np.array([1.0, 1.0, 1.1, 1.2, 0.9, 0.6, 0.5, 0.5])  # relative subcutaneous fat thickness

Spacing = tuple[float, float, float]  # voxel spacing (z, y, x) in mm


@dataclass(frozen=True)
class Anatomy:
    """Per-patient anatomy parameters (mm unless stated)."""

    scale: float  # body size factor
    height: float  # craniocaudal factor for the landmarks
    fat_mm: float  # subcutaneous fat thickness in the abdomen
    dome_right: float  # z of the right diaphragm dome
    lung_apex: float
    heart_scale: float
    shift_x: float  # lateral body offset on the table
    cortex_hu: float
    marrow_hu: float
    liver_hu: float
    rib_drop: float  # how far ribs descend from back to front

    @property
    def dome_left(self) -> float:
        return self.dome_right - 15.0

    @property
    def carina(self) -> float:
        return self.dome_right + 145.0 * self.height

    @property
    def iliac_crest(self) -> float:
        return 200.0 * self.height

    @property
    def femoral_heads(self) -> float:
        return 25.0 * self.height

    @property
    def field_of_view_mm(self) -> float:
        """Reconstruction field of view: the widest body width plus a margin, like a scanner's display FOV."""
        return float(2 * (_A_KNOTS.max() * self.scale + self.fat_mm * 1.2) * 1.12 + 2 * abs(self.shift_x))


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    height = rng.uniform(0.92, 1.08)
    dome = rng.uniform(450.0, 490.0) * height
    return Anatomy(
        scale=rng.uniform(0.85, 1.12), height=height, fat_mm=rng.uniform(8.0, 35.0), dome_right=dome,
        lung_apex=dome + rng.uniform(270.0, 300.0) * height, heart_scale=rng.uniform(0.85, 1.15),
        shift_x=rng.uniform(-12.0, 12.0), cortex_hu=rng.uniform(700.0, 1000.0), marrow_hu=rng.uniform(160.0, 280.0),
        liver_hu=rng.uniform(95.0, 120.0), rib_drop=rng.uniform(70.0, 110.0),
    )


def smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: float,
                 spacing_zyx: Spacing) -> np.ndarray:
    """Spatially correlated Gaussian noise with unit standard deviation (correlation length ``sigma_mm``)."""
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32),
                            [sigma_mm / s for s in spacing_zyx], mode="nearest")
    return field / max(float(field.std()), 1e-6)


class Torso:
    """Geometry helpers shared by the anatomy and the findings: body layers, spine line, lung placement."""

    def __init__(self, anat: Anatomy, cv: Canvas):
        self.anat, self.cv = anat, cv
        z = cv.z / anat.height
        s = anat.scale
        self.a = np.interp(z, _Z_KNOTS, _A_KNOTS)[:, None, None] * s  # lean half-width (Z,1,1)
        self.b = np.interp(z, _Z_KNOTS, _B_KNOTS)[:, None, None] * s
        self.fat = anat.fat_mm * np.interp(z, _Z_KNOTS, _FAT_KNOTS)[:, None, None]
        self.wall = 12.0 * s  # lateral/anterior muscle wall
        # posterior muscle thickness: thick paraspinal block in the abdomen, thin in the chest where the lungs
        # reach back beside the spine (paravertebral gutters)
        self.back = np.interp(cv.z, [anat.dome_right - 120.0, anat.dome_right], [55.0, 26.0])[:, None, None] * s
        self.spine_depth = 55.0 * s
        self.r_vb = np.interp(cv.z, [0, 380 * anat.height, 520 * anat.height, 800], [24, 22, 16, 14])[:, None, None] * s
        self.x0 = anat.shift_x
        self.full = self

    def slab(self, cv: Canvas) -> Torso:
        """The same torso on a slab of its canvas: the (Z,1,1) profiles cut to the slab's slices."""
        sub = copy.copy(self)
        sub.cv = cv
        rows = slice(cv.k0 - self.cv.k0, cv.k0 - self.cv.k0 + cv.z.size)
        for name in ("a", "b", "fat", "back", "r_vb"):
            setattr(sub, name, getattr(self, name)[rows])
        return sub

    def radius(self, grow: float = 0.0, inner: bool = False) -> np.ndarray:
        """Normalised superellipse radius of the body outline (grow mm outward) or of the inner cavity."""
        z, y, x = self.cv.coords()
        a = self.a + self.fat + grow - (self.wall + self.fat if inner else 0.0)
        b_ant = self.b + self.fat + grow - (self.wall + self.fat if inner else 0.0)
        b_post = self.b * 0.92 + self.fat * 0.6 + grow - (self.back + self.fat * 0.6 if inner else 0.0)
        bb = np.where(y > 0, b_post, b_ant)
        p = 2.3
        return (np.abs((x - self.x0) / a) ** p + np.abs(y / bb) ** p) ** (1.0 / p)

    @property
    def cavity_post(self) -> np.ndarray:
        return self.b * 0.92 - self.back

    @property
    def cavity_ant(self) -> np.ndarray:
        return -(self.b - self.wall)

    @property
    def y_vb(self) -> np.ndarray:
        """y of the vertebral body centre (Z,1,1): the body bulges into the cavity from behind."""
        return self.b * 0.92 - self.spine_depth - 0.35 * self.r_vb

    def at(self, profile: str, z_mm: float) -> float:
        """Value of the (Z,1,1) profile named ``profile`` at the slice of the whole scan nearest to ``z_mm``
        (landmarks for point-placed organs)."""
        full = self.full
        return float(getattr(full, profile)[int(np.argmin(np.abs(full.cv.z - z_mm))), 0, 0])


def draw_anatomy(cv: Canvas, anat: Anatomy, rng: np.random.Generator) -> Torso:
    """Paint the whole torso onto ``cv`` slab by slab; returns the geometry helper the findings reuse."""
    t = Torso(anat, cv)
    spacing = (cv.dz if cv.z.size > 1 else 5.0, cv.y[1] - cv.y[0], cv.x[1] - cv.x[0])
    trees = _tree_plan(t, anat, rng)
    bowel = False
    for s in cv.slabs():
        ts = t.slab(s)
        _body(s, ts, anat, trees)
        bowel |= bool(_bowel_region(s, ts, anat).any())
    depth = cv.slab_depth()
    sigmas = lambda mm: tuple(mm / d for d in spacing)  # noqa: E731 — smooth_field's σ in voxels
    loops = SlabField(rng, cv.hu.shape, sigmas(7.0), mode="nearest", slab=depth) if bowel else None
    gas = SlabField(rng, cv.hu.shape, sigmas(12.0), mode="nearest", slab=depth) if bowel else None
    texture = SlabField(rng, cv.hu.shape, sigmas(2.0), mode="nearest", slab=depth)
    for s in cv.slabs():
        ts = t.slab(s)
        k0, k1 = s.k0, s.k0 + s.z.size
        if loops is not None and gas is not None:
            _bowel(s, ts, anat, loops.normalised(k0, k1), gas.normalised(k0, k1))
        _spine(s, ts, anat)
        _ribs(s, ts, anat, ts.radius(inner=True))
        _pelvis(s, ts, anat)
        gain = np.where(s.organ == C.LUNG, 18.0, np.where(s.organ == C.AIR, 0.0, 5.0)).astype(np.float32)
        s.hu += gain * texture.normalised(k0, k1)
    return t


def _body(cv: Canvas, t: Torso, anat: Anatomy, trees: dict[int, list[Segment]]) -> None:
    """Everything painted before the bowel: body layers, chest, lungs, heart, airways, abdominal organs."""
    _table(cv, t)
    r_out, r_fat, r_cav = (t.radius(), t.radius(-2.0), t.radius(inner=True))
    r_mus = t.radius(-t.fat - 2.0)
    cv.paint(cv.full, r_out <= 1, 30.0, C.SKIN)
    cv.paint(cv.full, r_fat <= 1, -100.0, C.FAT)
    cv.paint(cv.full, r_mus <= 1, 55.0, C.MUSCLE)
    chest = _chest_region(cv, t, anat)
    cv.paint(cv.full, (r_cav <= 1) & ~chest, -95.0, C.VISCERAL_FAT)
    cv.paint(cv.full, (r_cav <= 1) & chest, -90.0, C.MEDIASTINUM)
    _lungs(cv, t, anat, chest, r_cav)
    _heart_and_vessels(cv, t, anat)
    _airways_and_lung_vessels(cv, t, anat, trees)
    _abdomen(cv, t, anat)


def _table(cv: Canvas, t: Torso) -> None:
    z, y, x = cv.coords()
    top = t.full.b.max() * 0.92 + t.full.fat.max() * 0.6 + 12.0
    curve = top + 0.0006 * (x - t.x0) ** 2
    shell = (y >= curve) & (y <= curve + 6.0) & (np.abs(x - t.x0) < 210) & np.ones_like(z, dtype=bool)
    cv.paint(cv.full, shell, 80.0, C.TABLE)


def _chest_region(cv: Canvas, t: Torso, anat: Anatomy) -> np.ndarray:
    """Thoracic cavity: above the two diaphragm domes (ellipsoids whose tops are the dome heights)."""
    z, y, x = cv.coords()
    below = np.zeros(cv.hu.shape, dtype=bool)
    for side, top in ((-1, anat.dome_right), (1, anat.dome_left)):
        a_c = t.a - t.wall
        cx = t.x0 + side * 0.45 * a_c
        below |= ((x - cx) / (0.8 * a_c)) ** 2 + (y / (1.3 * t.b)) ** 2 + ((z - top + 110.0) / 110.0) ** 2 <= 1
    return (z > anat.dome_left - 110.0) & ~below


def _lungs(cv: Canvas, t: Torso, anat: Anatomy, chest: np.ndarray, r_cav: np.ndarray) -> None:
    z, y, x = cv.coords()
    a_c = t.a - t.wall
    taper = np.sqrt(np.clip(1 - ((z - (anat.lung_apex - 90.0)) / 90.0) ** 2, 0, 1))
    taper = np.where(z < anat.lung_apex - 90.0, 1.0, taper)
    lung = np.zeros(cv.hu.shape, dtype=bool)
    for side in (-1, 1):
        cx = t.x0 + side * 0.5 * a_c
        ell = ((x - cx) / (0.62 * a_c * taper + 1e-3)) ** 2 + ((y - 0.1 * t.b) / (1.05 * t.b * taper + 1e-3)) ** 2
        lung |= (ell <= 1) & (side * (x - t.x0) > 16.0)
    lung &= chest & (r_cav <= 0.985) & (z < anat.lung_apex)
    cv.paint(cv.full, lung, -860.0, C.LUNG)


def _heart_and_vessels(cv: Canvas, t: Torso, anat: Anatomy) -> None:
    hs = anat.heart_scale * anat.scale
    zc = anat.dome_left + 50.0
    b = t.at("b", zc)
    center = (t.x0 + 22.0 * hs, -0.3 * b, zc)
    around = (C.MEDIASTINUM, C.LUNG)
    box, w = cv.ellipsoid(center, (62 * hs, 50 * hs, 62 * hs), edge=1.5)
    cv.paint(box, w, 95.0, C.HEART, inside=around)
    box, w = cv.ellipsoid(center, (48 * hs, 38 * hs, 50 * hs), edge=1.5)
    cv.paint(box, w, 150.0, C.HEART, inside=(C.HEART,))
    y_front = lambda zz: t.at("y_vb", zz) - t.at("r_vb", zz)  # noqa: E731 — front of the spine at height zz
    vessels = around + (C.HEART, C.VISCERAL_FAT, C.LIVER)
    arch = anat.carina + 35.0
    desc = [(t.x0 + 14.0, y_front(zz) - 12.0, zz) for zz in np.linspace(anat.iliac_crest + 5.0, arch, 6)]
    for p0, p1 in zip(desc[:-1], desc[1:]):
        cv.paint(*cv.tube(p0, p1, 11.0 * anat.scale, edge=1.0), 155.0, C.GREAT_VESSEL, inside=vessels)
    asc = (t.x0 + 4.0, -0.32 * t.at("b", arch), arch)
    cv.paint(*cv.tube(desc[-1], asc, 12.5 * anat.scale, edge=1.0), 155.0, C.GREAT_VESSEL, inside=vessels)
    cv.paint(*cv.tube(asc, (t.x0 + 8.0, -0.3 * b, zc + 30.0), 14.0 * anat.scale, edge=1.0), 155.0,
             C.GREAT_VESSEL, inside=vessels)
    ivc = [(t.x0 - 24.0, y_front(zz) - 12.0, zz) for zz in (anat.iliac_crest, anat.dome_right - 60.0)]
    cv.paint(*cv.tube(ivc[0], ivc[1], 11.0 * anat.scale, edge=1.0), 135.0, C.GREAT_VESSEL, inside=vessels)
    cv.paint(*cv.tube(ivc[1], (t.x0 - 10.0, -0.25 * b, zc), 12.0 * anat.scale, edge=1.0), 135.0, C.GREAT_VESSEL,
             inside=vessels)
    eso = [(t.x0 + 4.0, y_front(zz) - 6.0, zz) for zz in (anat.dome_left - 30.0, anat.lung_apex + 30.0)]
    cv.paint(*cv.tube(eso[0], eso[1], 7.0, edge=1.0), 45.0, C.MEDIASTINUM, inside=around)


def hilum(t: Torso, anat: Anatomy, side: int) -> np.ndarray:
    z = anat.carina - 25.0
    return np.array([t.x0 + side * 45.0 * anat.scale, t.at("y_vb", z) - t.at("r_vb", z) - 25.0, z])


Segment = tuple[np.ndarray, np.ndarray, float, np.ndarray]  # start, end (x, y, z mm), radius at the start, direction


def _tree_plan(t: Torso, anat: Anatomy, rng: np.random.Generator) -> dict[int, list[Segment]]:
    """The branching lung vessel trees of both sides, drawn once (depth first, as they are painted)."""
    plan: dict[int, list[Segment]] = {}
    for side in (-1, 1):
        h, segments = hilum(t, anat, side), list[Segment]()
        for direction in ((0.2 * side, 0.1, 1.0), (side, 0.2, 0.2), (0.4 * side, 0.6, -0.8), (0.5 * side, -0.6, -0.7)):
            _tree(segments, h, np.asarray(direction) / np.linalg.norm(direction), 45.0, 6.0, 4, rng)
        plan[side] = segments
    return plan


def _tree(segments: list[Segment], start: np.ndarray, direction: np.ndarray, length: float, radius: float,
          depth: int, rng: np.random.Generator) -> None:
    end = start + direction * length
    segments.append((start, end, radius, direction))
    if depth == 0:
        return
    for _ in range(2):
        d = direction + rng.normal(0.0, 0.55, 3)
        _tree(segments, end, d / np.linalg.norm(d), length * rng.uniform(0.65, 0.85), radius * 0.62, depth - 1, rng)


def _airways_and_lung_vessels(cv: Canvas, t: Torso, anat: Anatomy, trees: dict[int, list[Segment]]) -> None:
    zc = anat.carina
    y_tr = t.at("y_vb", zc) - t.at("r_vb", zc) - 18.0
    top = (t.x0, y_tr, anat.lung_apex + 60.0)
    carina = (t.x0, y_tr, zc)
    med = (C.MEDIASTINUM, C.LUNG, C.GREAT_VESSEL)
    cv.paint(*cv.tube(top, carina, 10.5, edge=1.0), 40.0, C.MEDIASTINUM, inside=med)
    cv.paint(*cv.tube(top, carina, 8.5, edge=1.0), -1000.0, C.AIRWAY, inside=med + (C.AIRWAY,))
    heart_top = (t.x0 + 5.0, -0.25 * t.at("b", zc), anat.dome_left + 95.0)
    for side in (-1, 1):
        h = hilum(t, anat, side)
        cv.paint(*cv.tube(carina, h, 8.0, 6.5, edge=1.0), 40.0, C.MEDIASTINUM, inside=med)
        cv.paint(*cv.tube(carina, h, 6.0, 4.5, edge=1.0), -1000.0, C.AIRWAY, inside=med + (C.AIRWAY,))
        cv.paint(*cv.tube(heart_top, h + (0, -8.0, 5.0), 11.0, 8.0, edge=1.0), 150.0, C.GREAT_VESSEL,
                 inside=med + (C.HEART,))
        for segment in trees[side]:
            _vessel(cv, *segment)


def _vessel(cv: Canvas, start: np.ndarray, end: np.ndarray, radius: float, direction: np.ndarray) -> None:
    """One segment of a lung vessel tree, with a bronchus beside the first generations."""
    cv.paint(*cv.tube(start, end, radius, radius * 0.8, edge=0.8), 70.0, C.LUNG_VESSEL, inside=(C.LUNG,))
    if radius > 3.0:
        offset = np.cross(direction, (0.0, 0.0, 1.0))
        offset = offset / (np.linalg.norm(offset) + 1e-6) * (radius + 2.5)
        cv.paint(*cv.tube(start + offset, end + offset, radius * 0.9, edge=0.6), -60.0, C.LUNG, inside=(C.LUNG,))
        cv.paint(*cv.tube(start + offset, end + offset, radius * 0.55, edge=0.6), -1000.0, C.AIRWAY,
                 inside=(C.LUNG,))


def _abdomen(cv: Canvas, t: Torso, anat: Anatomy) -> None:
    """Liver, spleen, stomach, kidneys, psoas, iliac vessels, bladder, rectum (the bowel loops come later)."""
    s = anat.scale
    visc = (C.VISCERAL_FAT,)
    zl = anat.dome_right - 85.0
    a_l, b_l = t.at("a", zl) - t.wall, t.at("b", zl)
    box, w = cv.ellipsoid((t.x0 - 0.38 * a_l, -0.05 * b_l, zl), (0.62 * a_l, 0.85 * b_l, 100.0 * anat.height), 1.5)
    if w is not None:  # None together with box: the liver misses the grid
        w = w * (cv.coords(box)[2] < t.x0 + 0.3 * a_l)
    cv.paint(box, w, anat.liver_hu, C.LIVER, inside=visc)
    portal = np.array([t.x0 - 0.2 * a_l, -0.1 * b_l, zl + 10.0])
    for direction in ((-1.0, -0.3, 0.4), (-0.8, 0.6, -0.1), (0.6, -0.5, 0.2)):
        d = np.asarray(direction) / np.linalg.norm(direction)
        cv.paint(*cv.tube(portal, portal + 70 * d, 6.0, 3.0, edge=1.0), 165.0, C.LIVER, inside=(C.LIVER,))
    cv.paint(*cv.ellipsoid((t.x0 - 0.3 * a_l, -0.5 * b_l, zl - 40.0), (14, 18, 28), 1.0), 10.0, C.BOWEL,
             inside=(C.LIVER,))
    zs = anat.dome_left - 60.0
    cv.paint(*cv.ellipsoid((t.x0 + 0.62 * a_l, 0.45 * b_l, zs), (30 * s, 50 * s, 55 * s), 1.5), 115.0, C.SPLEEN,
             inside=visc)
    st_c = np.array([t.x0 + 0.3 * a_l, -0.3 * b_l, zs + 5.0])
    cv.paint(*cv.ellipsoid(st_c, (45 * s, 38 * s, 50 * s), 1.5), 70.0, C.STOMACH, inside=visc)
    box, w = cv.ellipsoid(st_c, (40 * s, 33 * s, 45 * s), 1.0)
    if box is not None:
        air = cv.coords(box)[1] < st_c[1] - 18 * s
        cv.paint(box, w, np.where(air, -950.0, 15.0), C.STOMACH, inside=(C.STOMACH,))
    zk = anat.dome_right - 170.0 * anat.height
    for side, dz in ((-1, -15.0), (1, 5.0)):
        yk = t.at("y_vb", zk) - 2.0
        ck = np.array([t.x0 + side * (t.at("r_vb", zk) + 45 * s), yk, zk + dz])
        cv.paint(*cv.ellipsoid(ck, (25 * s, 22 * s, 55 * s), 1.5), 165.0, C.KIDNEY, inside=visc + (C.MUSCLE,))
        cv.paint(*cv.ellipsoid(ck, (16 * s, 14 * s, 40 * s), 1.0), 125.0, C.KIDNEY, inside=(C.KIDNEY,))
        cv.paint(*cv.ellipsoid(ck + (-side * 14 * s, -6, 0), (9, 9, 28), 1.0), -60.0, C.VISCERAL_FAT,
                 inside=(C.KIDNEY,))
        p_top = (t.x0 + side * (t.at("r_vb", zk) + 10), t.at("y_vb", zk), zk + 40)
        p_bot = (t.x0 + side * 0.42 * t.at("a", 60.0), t.at("y_vb", 60.0) - 35.0, anat.femoral_heads + 35.0)
        cv.paint(*cv.tube(p_top, p_bot, 7.0 * s, 24.0 * s, edge=1.0), 55.0, C.MUSCLE, inside=visc)
        iliac = (t.x0 + side * 0.45 * t.at("a", 60.0), -0.1 * t.at("b", 60.0), anat.femoral_heads + 25.0)
        bif = (t.x0 + 14.0, t.at("y_vb", anat.iliac_crest) - 32.0, anat.iliac_crest + 8.0)
        cv.paint(*cv.tube(bif, iliac, 6.5, edge=1.0), 155.0, C.GREAT_VESSEL, inside=visc + (C.MUSCLE,))
    zb = anat.femoral_heads + 30.0
    cv.paint(*cv.ellipsoid((t.x0, -0.45 * t.at("b", zb), zb), (42 * s, 34 * s, 35 * s), 1.5), 8.0, C.BLADDER,
             inside=visc)
    rect = [(t.x0, t.at("y_vb", zz) - 10.0, zz) for zz in (anat.femoral_heads - 20.0, anat.iliac_crest - 80.0)]
    cv.paint(*cv.tube(rect[0], rect[1], 15.0, edge=1.0), 40.0, C.BOWEL, inside=visc)
    cv.paint(*cv.tube(rect[0], rect[1], 9.0, edge=1.0), -700.0, C.BOWEL, inside=(C.BOWEL,))


def _bowel_region(cv: Canvas, t: Torso, anat: Anatomy) -> np.ndarray:
    """Where bowel loops may lie: peritoneal fat between the liver and the pelvis, off the spine."""
    z, y, x = cv.coords()
    region = (cv.organ == C.VISCERAL_FAT) & (z < anat.dome_left - 70.0) & (z > anat.femoral_heads + 20.0)
    region &= (y < t.y_vb - t.r_vb - 8.0) | (np.abs(x - t.x0) > t.r_vb + 55.0)
    return region


def _bowel(cv: Canvas, t: Torso, anat: Anatomy, loops: np.ndarray, gas: np.ndarray) -> None:
    """Bowel loops: iso-bands of a smooth random field (``loops``) in the peritoneal fat (walls, fluid and gas)."""
    region = _bowel_region(cv, t, anat)
    cv.paint(cv.full, region & (loops > 0.1), 75.0, C.BOWEL)
    lumen = region & (loops > 0.55)
    cv.paint(cv.full, lumen, np.where(gas > 1.0, -950.0, 20.0), C.BOWEL)


def _spine(cv: Canvas, t: Torso, anat: Anatomy) -> None:
    z, y, x = cv.coords()
    level = 28.0 * anat.height
    phase = np.mod(z, level)
    sacrum_top = anat.iliac_crest - 15.0
    xx = np.abs(x - t.x0)
    body = ((xx / (1.15 * t.r_vb)) ** 2 + ((y - t.y_vb) / t.r_vb) ** 2)
    vert = (body <= 1) & (z > sacrum_top)
    inner = (body <= (1 - 3.0 / t.r_vb) ** 2)
    disc = vert & (phase < 6.0)
    cv.paint(cv.full, vert & ~disc, anat.cortex_hu, C.CORTEX)
    cv.paint(cv.full, vert & inner & ~disc, anat.marrow_hu, C.MARROW)
    cv.paint(cv.full, disc, 90.0, C.DISC)
    y_canal = t.y_vb + t.r_vb + 9.0
    canal_r = np.sqrt(xx**2 + (y - y_canal) ** 2)
    arch = (canal_r > 8.0) & (canal_r < 14.0) & (y > t.y_vb + t.r_vb * 0.5) & (z > sacrum_top - 100)
    spinous = (xx < 4.0) & (y > y_canal) & (y < y_canal + 40.0) & (phase > 6.0) & (phase < 20.0)
    transverse = (xx > 8) & (xx < t.r_vb + 16.0) & (np.abs(y - y_canal) < 4.0) & (phase > 10.0) & (phase < 15.0)
    cv.paint(cv.full, arch | ((spinous | transverse) & (z > sacrum_top)), 0.7 * anat.cortex_hu, C.CORTEX)
    cv.paint(cv.full, (canal_r <= 8.0) & (z > sacrum_top - 100), 15.0, C.CANAL)
    erector = ((xx - 26.0) / 22.0) ** 2 + ((y - y_canal - 14.0) / 20.0) ** 2 <= 1
    cv.paint(cv.full, erector, 55.0, C.MUSCLE, inside=(C.LUNG, C.MEDIASTINUM, C.VISCERAL_FAT))
    sacrum = ((xx / (1.8 * t.r_vb)) ** 2 + ((y - t.y_vb - 12.0) / (0.9 * t.r_vb)) ** 2 <= 1)
    sacrum &= (z <= sacrum_top) & (z > anat.femoral_heads + 25.0)
    cv.paint(cv.full, sacrum, anat.cortex_hu, C.CORTEX)
    cv.paint(cv.full, sacrum & ((xx / (1.8 * t.r_vb - 3)) ** 2 + ((y - t.y_vb - 12.0) / (0.9 * t.r_vb - 3)) ** 2
                                <= 1), anat.marrow_hu, C.MARROW)


def _ribs(cv: Canvas, t: Torso, anat: Anatomy, r_cav: np.ndarray) -> None:
    """Ribs: oblique hoops that fall from the spine towards the sternum, so each slice cuts short arcs."""
    z, y, x = cv.coords()
    phi = np.arctan2(np.abs(x - t.x0), y)  # 0 behind, pi in front
    zz = z + anat.rib_drop * (1 - np.cos(phi)) / 2
    low, high = anat.dome_right - 150.0 * anat.height, anat.lung_apex - 10.0
    pitch = (high - low) / 12.0
    phase = np.mod(zz - low, pitch) - pitch / 2
    dist = (r_cav - 1.0) * np.sqrt((x - t.x0) ** 2 + y**2) / np.maximum(r_cav, 1e-3) - 5.0
    hoop = (dist / 6.5) ** 2 + (phase / 5.5) ** 2
    ribs = (hoop <= 1) & (zz > low) & (zz < high) & (phi < 2.45) & (cv.organ != C.AIR)
    cv.paint(cv.full, ribs, 0.9 * anat.cortex_hu, C.CORTEX)
    cv.paint(cv.full, ribs & (hoop <= 0.3), anat.marrow_hu, C.MARROW)
    cartilage = (hoop <= 1) & (zz > low) & (zz < high) & (phi >= 2.45) & (phi < 2.85) & (cv.organ != C.AIR)
    cv.paint(cv.full, cartilage, 120.0, C.MUSCLE)
    y_st = t.cavity_ant - 6.0
    sternum = ((np.abs(x - t.x0) / 15.0) ** 2 + ((y - y_st) / 6.5) ** 2 <= 1)
    sternum &= (z > anat.dome_right + 5.0) & (z < anat.lung_apex - 30.0)
    cv.paint(cv.full, sternum, 0.8 * anat.cortex_hu, C.CORTEX)
    cv.paint(cv.full, sternum & ((np.abs(x - t.x0) / 11.0) ** 2 + ((y - y_st) / 3.0) ** 2 <= 1), anat.marrow_hu,
             C.MARROW)


def _bone_tube(cv: Canvas, anat: Anatomy, p0: npt.ArrayLike, p1: npt.ArrayLike, r0: float,
               r1: float | None = None) -> None:
    r1 = r0 if r1 is None else r1
    cv.paint(*cv.tube(p0, p1, r0, r1, edge=0.8), anat.cortex_hu, C.CORTEX)
    cv.paint(*cv.tube(p0, p1, r0 - 3.0, r1 - 3.0, edge=0.8), anat.marrow_hu, C.MARROW)


def _pelvis(cv: Canvas, t: Torso, anat: Anatomy) -> None:
    if cv.z_all.min() > anat.iliac_crest + 10.0:
        return  # chest-only range: no pelvic bones to draw
    z, y, x = cv.coords()
    crest, fh = anat.iliac_crest, anat.femoral_heads
    a_c = t.a - t.wall
    xx = np.abs(x - t.x0)
    rr = np.sqrt((xx / (0.8 * a_c)) ** 2 + ((y - 0.1 * t.b) / (0.75 * t.b)) ** 2)
    front = -0.65 * t.b * np.clip((z - fh - 20.0) / (crest - fh - 20.0), 0.2, 1.0)
    wing = (rr > 0.86) & (rr < 0.93) & (xx > 0.3 * a_c) & (y > front) & (z < crest) & (z > fh + 30.0)
    cv.paint(cv.full, wing, anat.cortex_hu, C.CORTEX)
    cv.paint(cv.full, wing & (rr > 0.88) & (rr < 0.91), anat.marrow_hu, C.MARROW)
    iliacus = (rr > 0.72) & (rr <= 0.86) & (xx > 0.35 * a_c) & (y > front) & (z < crest) & (z > fh + 30.0)
    cv.paint(cv.full, iliacus, 55.0, C.MUSCLE, inside=(C.VISCERAL_FAT, C.BOWEL))
    a_h, b_h = t.at("a", fh) - t.wall, t.at("b", fh)
    for side in (-1, 1):
        head = np.array([t.x0 + side * 0.6 * a_h, 0.05 * b_h, fh])
        cv.paint(*cv.ellipsoid(head, (24, 24, 24), 0.8), anat.cortex_hu, C.CORTEX)
        cv.paint(*cv.ellipsoid(head, (20.5, 20.5, 20.5), 0.8), anat.marrow_hu, C.MARROW)
        neck = head + (side * 0.2 * a_h, 5.0, -45.0)
        _bone_tube(cv, anat, head, neck, 15.0)
        _bone_tube(cv, anat, neck, neck + (0, 5.0, -160.0), 14.0)
        _bone_tube(cv, anat, head + (-side * 10, -20, -5), (t.x0 + side * 9.0, -0.8 * b_h, fh - 35.0), 11.0, 9.0)
        _bone_tube(cv, anat, head + (-side * 5, 20, -10), (t.x0 + side * 0.4 * a_h, 0.5 * b_h, fh - 45.0), 12.0)
        _bone_tube(cv, anat, head + (0, 5, 25), head + (-side * 10, 15, 60), 16.0, 12.0)

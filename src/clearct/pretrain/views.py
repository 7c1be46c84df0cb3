"""The two views of one CT slice for MoCo v3 / LECL, drawn with an explicit numpy Generator (reproducible).

Geometry
- lesion slice (LECL): view 1 (query side) is the full slice; view 2 (momentum side) is a square crop centred on
  the lesion box centre with side uniform in [√crop_min·S, S] (S = the shorter image side; i.e. area fraction in
  [crop_min, 1]), shifted to stay inside the image. With ``lesion_scale`` (lo, hi) the side is instead uniform in
  [lo, hi] × the box's longer side (at least S/8, at most S): a crop sized to the lesion, so the lesion fills a
  similar share of every lesion view whatever its size.
- supervised ceiling (``full_slice``): one view of the full slice (a crop could cut the lesion out) with view 2's
  light augmentation (jitter, flip, blur p = 0.1, no solarize), returned twice; its loss uses it once.
- any other slice (and every slice for plain MoCo): two independent RandomResizedCrops (area [crop_min, 1], aspect
  3/4..4/3), as MoCo v3.

Augmentations (MoCo v3 / BYOL, asymmetric, adapted to grey CT; no colour jitter or grayscale)
- one HU window per sample, drawn from the configured windows (both views share it);
- window jitter with p = 0.8 per view: level shifted by U(−0.1, 0.1)·width and width scaled by U(0.8, 1.25) before
  clipping — brightness/contrast jitter done in HU, so nothing saturates twice; ``window_jitter`` s scales both (shift
  U(−0.1, 0.1)·s·width, width factor 1 + s·(U(0.8, 1.25) − 1)) with the same random draws: s = 0 keeps the
  window as configured, s = 1 (the default) is the recipe above bit for bit. Density findings (emphysema) are HU
  levels, which this jitter teaches the encoder to ignore: in 1-epoch CPU runs it cost emphysema on two seeds and
  lesion location did not need it, so 0 is the documented lever for density findings (docs/pretraining.md);
- horizontal flip p = 0.5; Gaussian blur σ ~ U(0.1, 2.0) px × size / 224 with p = 1.0 (view 1) / 0.1 (view 2) —
  MoCo v3's σ range is for 224 px views, so a 128 px view gets the same blur relative to the image (an unscaled
  σ of 2 px on a 128 px slice wipes out a 6 px lesion); solarize (x ≥ 0.5 → 1 − x) with p = 0 (view 1) / 0.2
  (view 2);
- grey → 3 channels, then the encoder's mean/std normalisation.

Drawing and rendering are separate: :func:`draw_views` makes every random decision of a pair (with the generator
calls of the original single function, in its order) and :func:`render_view` applies them to a slice. The loader
either renders in its worker processes (:func:`make_views`) or hands the int16 slice and the decisions to the
training loop, which renders the batch where the model runs (:func:`render_batch`, ``--views device``): the same
operations in the same order, so the same views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from clearct.preprocess import window_hu

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the slice


@dataclass(frozen=True)
class ViewSpec:
    """How views are made: output size, windows (lo, hi) drawn per sample, crop scale, normalisation."""

    size: int
    windows: tuple[tuple[float, float], ...]
    crop_min: float = 0.08
    lesion_scale: tuple[float, float] | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    jitter_p: float = 0.8
    window_jitter: float = 1.0  # strength of the window jitter: 0 none, 1 MoCo-v3-like (the module docstring)
    blur_p: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # at 224 px; scaled by size / 224
    solarize_p: tuple[float, float] = (0.0, 0.2)


Crop = tuple[int, int, int, int]  # top, left, height, width


def random_resized_crop(rng: np.random.Generator, height: int, width: int, crop_min: float) -> Crop:
    """RandomResizedCrop's box (area in [crop_min, 1], log-uniform aspect 3/4..4/3, centre crop fallback)."""
    area = height * width
    for _ in range(10):
        target = area * rng.uniform(crop_min, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def lesion_crop(rng: np.random.Generator, height: int, width: int, box: Box, crop_min: float,
                lesion_scale: tuple[float, float] | None = None) -> Crop:
    """Square crop centred on the box centre, side U(√crop_min·S, S) — or U(lo, hi) × the box's longer side with
    ``lesion_scale`` — shifted to lie inside the image."""
    full = min(height, width)
    if lesion_scale is None:
        side = int(round(rng.uniform(math.sqrt(crop_min) * full, full)))
    else:
        extent = max(box[2] - box[0], box[3] - box[1], 1.0)
        side = int(round(min(max(rng.uniform(*lesion_scale) * extent, full / 8), full)))
    side = max(1, min(side, full))
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return top, left, side, side


def jitter_window(window: tuple[float, float], strength: float, rng: np.random.Generator) -> tuple[float, float]:
    """The window (lo, hi) with its level shifted by U(−0.1, 0.1)·strength·width and its width scaled by
    1 + strength·(U(0.8, 1.25) − 1); two draws whatever the strength, so the other augmentations stay the same."""
    lo, hi = window
    width = hi - lo
    centre = (lo + hi) / 2 + rng.uniform(-0.1, 0.1) * strength * width
    width *= 1 + strength * (rng.uniform(0.8, 1.25) - 1)  # u − 1 is exact, so strength 1 gives u itself
    return centre - width / 2, centre + width / 2


@dataclass(frozen=True)
class ViewParams:
    """Every random decision of one view: crop, jittered window, flip, blur σ (0: none), solarize."""

    crop: Crop
    lo: float
    hi: float
    flip: bool
    sigma: float
    solarize: bool

    def packed(self) -> torch.Tensor:
        """The decisions as 9 float64 numbers (a DataLoader collates tensors)."""
        return torch.tensor([*self.crop, self.lo, self.hi, float(self.flip), self.sigma, float(self.solarize)],
                            dtype=torch.float64)

    @classmethod
    def unpack(cls, t: torch.Tensor) -> ViewParams:
        v = t.tolist()
        return cls((int(v[0]), int(v[1]), int(v[2]), int(v[3])), v[4], v[5], bool(v[6]), v[7], bool(v[8]))


def draw_view(crop: Crop, window: tuple[float, float], spec: ViewSpec, rng: np.random.Generator, view: int,
              solarize: bool = True) -> ViewParams:
    lo, hi = jitter_window(window, spec.window_jitter, rng) if rng.random() < spec.jitter_p else window
    flip = bool(rng.random() < 0.5)
    sigma = float(rng.uniform(*spec.blur_sigma)) * spec.size / 224 if rng.random() < spec.blur_p[view] else 0.0
    solar = bool(rng.random() < spec.solarize_p[view] and solarize)
    return ViewParams(crop, float(lo), float(hi), flip, sigma, solar)


def render_view(hu: torch.Tensor, p: ViewParams, spec: ViewSpec) -> torch.Tensor:
    """One (3, size, size) view of the HU slice ``hu`` (Y, X), on ``hu``'s device."""
    x = window_hu(hu, p.lo, p.hi)[None]  # (1, H, W) in [0, 1]
    x = TF.resized_crop(x, *p.crop, [spec.size, spec.size], antialias=True)
    if p.flip:
        x = TF.horizontal_flip(x)
    if p.sigma:
        x = TF.gaussian_blur(x, kernel_size=2 * math.ceil(3 * p.sigma) + 1, sigma=p.sigma)
    if p.solarize:
        x = torch.where(x >= 0.5, 1.0 - x, x)
    x = x.clamp(0.0, 1.0).expand(3, -1, -1)
    return TF.normalize(x, list(spec.mean), list(spec.std))


def draw_views(height: int, width: int, spec: ViewSpec, rng: np.random.Generator, box: Box | None = None,
               *, full_slice: bool = False) -> tuple[ViewParams, ViewParams]:
    """The decisions of a pair (see :func:`make_views`); ``full_slice`` gives one decision twice."""
    window = spec.windows[int(rng.integers(len(spec.windows)))]
    if full_slice:
        view = draw_view((0, 0, height, width), window, spec, rng, 1, solarize=False)
        return view, view
    if box is None:
        crops = [random_resized_crop(rng, height, width, spec.crop_min) for _ in range(2)]
    else:
        crops = [(0, 0, height, width), lesion_crop(rng, height, width, box, spec.crop_min, spec.lesion_scale)]
    v1 = draw_view(crops[0], window, spec, rng, 0)
    return v1, draw_view(crops[1], window, spec, rng, 1)


def make_views(
    hu: np.ndarray | torch.Tensor, spec: ViewSpec, rng: np.random.Generator, box: Box | None = None,
    *, full_slice: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (3, size, size) float32 views of one HU slice (Y, X); ``box`` given → the LECL full-slice / lesion-crop
    pair; ``full_slice`` → two augmentations of the whole slice."""
    hu = torch.as_tensor(np.asarray(hu))
    p1, p2 = draw_views(hu.shape[0], hu.shape[1], spec, rng, box, full_slice=full_slice)
    v1 = render_view(hu, p1, spec)
    return v1, (v1 if p2 is p1 else render_view(hu, p2, spec))


def render_batch(hu: torch.Tensor, params: torch.Tensor, spec: ViewSpec) -> torch.Tensor:
    """Views of a batch where ``hu`` lies (e.g. the GPU): ``hu`` (B, Y, X) int16 slices (padded: the crops lie in
    each slice), ``params`` (B, 9) packed :class:`ViewParams`; returns (B, 3, size, size)."""
    return torch.stack([render_view(hu[i], ViewParams.unpack(params[i]), spec) for i in range(len(hu))])

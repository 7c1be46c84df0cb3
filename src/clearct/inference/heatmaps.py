"""Heatmaps: what drives each target's score inside the slices the fold ensemble attends to most.

For each of the ``top_k`` most attended instances of a scan (a slice in one HU window), the slice is rendered
again and passed through the frozen encoder; its embedding replaces that instance's row in the bag while every
other row keeps its stored feature. Each fold model runs its own ``forward`` on that bag (feature scaler
included), the logits are averaged over the models, and the gradient of each target's logit
(:func:`clearct.inference.gradcam.target_logits`) gives the map, by one of two methods:

- ``gradient-input`` (the default): the gradient with respect to the encoder's input pixels times those pixels,
  ReLU(Σ_c x_c ∂logit/∂x_c), smoothed by a Gaussian of ``SIGMA_PX`` input pixels and resized to the slice's own
  rows × columns (the inverse of the rendering's resize: no offset).
- ``gradcam``: Grad-CAM on the encoder's last spatial map A (:mod:`clearct.encoders.spatial`), ReLU(Σ_c w_c A_c)
  with w_c the spatial mean of ∂logit/∂A_c, upsampled with each cell placed where its receptive field is centred
  (:func:`map_shift`: strided convolutions padded on both sides centre a cell's field up and left of the cell's
  geometric centre, by half a cell at the map for a ResNet).

Why gradient × input is the default: a Grad-CAM map is bilinear between the cells of the last map, so its peak
lies on a cell centre, 16–32 input pixels apart, and a lesion smaller than a cell cannot be pointed at; gradient ×
input lives on the input grid. Measured on the demo (the pointing game of each method, random init beside it):
benchmarks/RESULTS.md, "pointing game".

Cost: one encoder forward per chosen instance (the instances of one window in one batch) and one backward per
target; Grad-CAM's backward runs only through the network after A (the weights are frozen, so autograd records
nothing before it), gradient × input's through the whole encoder.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from clearct.common.device import autocast_for, channels_last
from clearct.common.errors import ClearctError
from clearct.config import HeatmapMethod
from clearct.encoders import RANDOM_PREFIX, create_encoder
from clearct.encoders.spatial import connected_map, spatial_features, spatial_tap
from clearct.inference.ensembles import model_encoder
from clearct.inference.gradcam import (
    field_offset,
    gradcam,
    gradient_input,
    normalise_per_target,
    target_logits,
    upsample,
)
from clearct.io.heatmaps import ScanHeatmaps, write_heatmaps
from clearct.mil.data import Bag
from clearct.mil.store import MilEnsemble
from clearct.preprocess import Window, render_slices
from clearct.report.attention import top_instances
from clearct.report.heatmaps import heatmap_overlay

SIGMA_PX = 2.0  # gradient × input: Gaussian sd in encoder input pixels (1–3 px scored alike: RESULTS.md)
PROBE_CELLS = 3  # interior cells per axis whose receptive fields are measured (3 × 3)
SHIFT_SPREAD = 0.125  # a field shift is applied when it is the same for every probed cell: sd ≤ this share of a cell
LOG = logging.getLogger("clearct")


@functools.lru_cache(maxsize=16)
def map_shift(name: str, size: int) -> tuple[float, float]:
    """Where the cells of the map of encoder ``name`` at ``size`` px look, relative to their geometric centres:
    (rows, columns) in input pixels. Measured on a random-init copy of the architecture — the shift comes from its
    strides and paddings, not its weights — as the mean displacement of the receptive-field centroids
    (|∂A_cell/∂x| on a seeded noise input) of interior cells. (0, 0) for token maps (attention mixes every token
    with every other, so a field has no local centre), where the cells disagree by more than ``SHIFT_SPREAD`` of a
    cell, or where the copy cannot be built."""
    try:
        encoder = create_encoder(f"{RANDOM_PREFIX}{name}", image_size=size).eval()
        if spatial_tap(encoder).layout == "tokens":
            return 0.0, 0.0
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        a = connected_map(encoder, x)
    except ClearctError as exc:
        LOG.info("heatmaps: no receptive-field shift for %s (%s)", name, exc)
        return 0.0, 0.0
    h, w = a.shape[2:]
    rows = sorted({int(round(v)) for v in np.linspace(1, h - 2, PROBE_CELLS)}) if h > 2 else [h // 2]
    cols = sorted({int(round(v)) for v in np.linspace(1, w - 2, PROBE_CELLS)}) if w > 2 else [w // 2]
    cells = [(i, j) for i in rows for j in cols]
    grads = torch.stack([torch.autograd.grad(a[0, :, i, j].sum(), x, retain_graph=True)[0][0].abs().sum(dim=0)
                         for i, j in cells])
    (dr, dc), (sr, sc) = field_offset(grads, cells, (h, w), size)
    if max(sr / (size / h), sc / (size / w)) > SHIFT_SPREAD:
        LOG.info("heatmaps: %s cells disagree on their field shift (sd %.1f, %.1f px): none applied", name, sr, sc)
        return 0.0, 0.0
    return dr, dc


def heatmap_layer(encoder: nn.Module, method: HeatmapMethod) -> str:
    """What the maps of ``method`` are taken at (the h5 attribute ``layer``): ``input`` for gradient × input, the
    spatial tap (``module:input|output``) for Grad-CAM; the one-line error for an encoder that cannot give them
    (3D volumes and patch encoders for both, an encoder without a spatial map for Grad-CAM)."""
    if method == "gradcam":
        return spatial_tap(encoder).name
    if getattr(encoder, "is_3d", False) or hasattr(encoder, "embed_scan"):
        name = getattr(encoder, "encoder_name", type(encoder).__name__)
        raise ClearctError(f"{name} does not embed single slices; heatmaps need a 2D slice encoder")
    return "input"


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters without gradients for the duration (restored after), so autograd records only what follows the
    tapped map."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def chosen_instances(bag: Bag, attention: np.ndarray, top_k: int, n_slices: int) -> np.ndarray:
    """Rows of the ``top_k`` most attended instances (highest first) that are slices of the volume."""
    top = top_instances(attention, top_k)
    return np.array([i for i in top if 0 <= bag.slice_index[i] < n_slices], dtype=np.int64)


def _maps(encoder: nn.Module, ensemble: MilEnsemble, bag_x: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
          rows: torch.Tensor, x: torch.Tensor, size: tuple[int, int], method: HeatmapMethod,
          shift: tuple[float, float]) -> torch.Tensor:
    """(k, T, H, W) maps of k instances of one bag (rows ``rows``, rendered slices ``x``)."""
    feats, mask, window = bag_x
    k, device = len(rows), feats.device
    with torch.enable_grad(), autocast_for(device):
        if method == "gradcam":
            source, emb = spatial_features(encoder, x)
        else:
            source = x.detach().requires_grad_(True)
            emb = encoder(source)
        # k copies of the bag, copy j with row rows[j] recomputed from its slice: logit j depends on slice j alone
        bags = feats.unsqueeze(0).repeat(k, 1, 1).index_put((torch.arange(k, device=device), rows),
                                                             emb.to(feats.dtype))
        out = torch.stack([m(bags, mask.expand(k, -1), window.expand(k, -1))[0].float()
                           for m in ensemble.models]).mean(dim=0)
    logits = target_logits(ensemble.spec, out)
    maps = []
    for t in range(logits.shape[1]):
        (grad,) = torch.autograd.grad(logits[:, t].sum(), source, retain_graph=t + 1 < logits.shape[1],
                                      allow_unused=True)
        grad = torch.zeros_like(source) if grad is None else grad
        if method == "gradcam":
            maps.append(upsample(gradcam(source.detach(), grad), size, shift))
        else:
            maps.append(upsample(gradient_input(source.detach(), grad, SIGMA_PX), size))
    return torch.stack(maps, dim=1).cpu()


def scan_heatmaps(hu: np.ndarray, bag: Bag, attention: np.ndarray, ensemble: MilEnsemble, encoder: nn.Module, *,
                  top_k: int = 6, batch_size: int = 16, method: HeatmapMethod = "gradient-input") -> ScanHeatmaps:
    """Maps of every target over the ``top_k`` most attended instances of one scan, by ``method``.

    ``hu`` is the scan's CT (Z, Y, X); ``bag`` its instances (features of the models' encoder, windows in the
    models' order) and ``attention`` the ensemble's attention over them; ``encoder`` sits on the ensemble's device
    in eval mode.
    """
    layer = heatmap_layer(encoder, method)
    device = ensemble.device
    windows = [Window(str(n), float(lo), float(hi)) for n, lo, hi in ensemble.windows]
    chosen = chosen_instances(bag, attention, top_k, hu.shape[0])
    n_out = len(ensemble.spec.output_names)
    maps = torch.zeros(len(chosen), n_out, hu.shape[1], hu.shape[2])
    size, mean, std = (getattr(encoder, key) for key in ("input_size", "mean", "std"))
    dr, dc = map_shift(str(encoder.encoder_name), int(size)) if method == "gradcam" else (0.0, 0.0)
    shift = (dr * hu.shape[1] / size, dc * hu.shape[2] / size)  # input pixels → slice pixels
    bag_x = (torch.from_numpy(np.asarray(bag.feats, np.float32)).to(device),
             torch.ones(1, len(bag), dtype=torch.bool, device=device),
             torch.from_numpy(np.asarray(bag.window, np.int64)).unsqueeze(0).to(device))
    with frozen(encoder, *ensemble.models):
        for w, win in enumerate(windows):
            positions = np.flatnonzero(bag.window[chosen] == w)
            for start in range(0, len(positions), batch_size):
                part = positions[start : start + batch_size]
                rows = chosen[part]
                x = render_slices(hu[bag.slice_index[rows]], [win], size, mean=mean, std=std)[:, 0].to(device)
                if getattr(encoder, "channels_last", False):
                    x = channels_last(x)
                maps[part] = _maps(encoder, ensemble, bag_x, torch.from_numpy(rows).to(device), x, hu.shape[1:],
                                   method, shift)
    normalised, scale = normalise_per_target(maps)
    return ScanHeatmaps(
        maps=normalised.numpy().astype(np.float16), slice_index=bag.slice_index[chosen].astype(np.int32),
        window=bag.window[chosen].astype(np.int8), attention=np.asarray(attention, np.float32)[chosen],
        targets=list(ensemble.spec.output_names), windows=[(w.name, w.lo, w.hi) for w in windows], method=method,
        layer=layer, encoder=str(encoder.encoder_name), weights_sha256=str(encoder.weights_sha256),
        scan_id=bag.scan_id, scale=[float(s) for s in scale],
    )


def write_scan_heatmaps(folder: Path, h: ScanHeatmaps, hu: np.ndarray, scores: dict[str, float] | None = None, *,
                        overlays: bool = True) -> Path:
    """``folder/<scan_id>.h5`` and, with ``overlays``, one PNG per instance
    (``<scan_id>-slice<NNNN>-<window>.png``: a panel per target, its score in the title); returns the h5 path."""
    path = write_heatmaps(Path(folder) / f"{h.scan_id}.h5", h)
    if overlays:
        for k, (s, w) in enumerate(zip(h.slice_index, h.window)):
            name = h.windows[w][0]
            heatmap_overlay(Path(folder) / f"{h.scan_id}-slice{int(s):04d}-{name}.png", hu_slice=hu[s],
                            window=h.windows[w], maps=h.maps[k], targets=h.targets,
                            scores=[scores[t] for t in h.targets] if scores is not None else None,
                            title=f"{h.scan_id} · slice {int(s)} · {name} window · attention {h.attention[k]:.3f}\n"
                                  f"{h.title} of {h.encoder} at {h.layer}")
    return path


def heatmap_encoder(ensemble: MilEnsemble, *, encoder: str | None, weights: Path | None, features: Path | None,
                    where: Path, method: HeatmapMethod = "gradient-input") -> nn.Module:
    """The models' own encoder (:func:`clearct.inference.ensembles.model_encoder`), refused unless it can give
    ``method``'s maps (:func:`heatmap_layer`)."""
    module = model_encoder(ensemble, encoder=encoder, weights=weights, features=features, where=where)
    heatmap_layer(module, method)
    return module


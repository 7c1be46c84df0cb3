"""The math of the heatmaps as pure functions: which logit explains a score, gradient × input and its smoothing,
Grad-CAM's channel weighting, the upsampling to the slice's grid and the per-target normalisation of what is
stored."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clearct.modeling.tasks import TaskSpec


def target_logits(spec: TaskSpec, out: torch.Tensor) -> torch.Tensor:
    """Raw model outputs (B, n_out) → one logit per output name (B, T), the quantity whose gradient a map shows.

    Multilabel: each target's logit; binary: the log-odds l₁ − l₀ of the second class (its score is
    sigmoid(l₁ − l₀)); multiclass: each class's logit; regression: each output (z-scored units, the score's
    direction); survival: the risk.
    """
    if spec.kind == "binary":
        return out[:, 1:2] - out[:, 0:1]
    return out


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, h, w) maps smoothed by a Gaussian of standard deviation ``sigma`` pixels (separable, edges reflected so
    a border keeps its level); ``sigma`` ≤ 0 returns them unchanged."""
    if sigma <= 0:
        return maps
    radius = min(math.ceil(3 * sigma), min(maps.shape[1:]) - 1)  # reflect padding needs radius < the side
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(maps[:, None].float(), (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return F.conv2d(x, kernel.view(1, 1, -1, 1))[:, 0]


def gradient_input(inputs: torch.Tensor, gradients: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, S, S) encoder inputs and ∂logit/∂input → (B, S, S): ReLU(Σ_c x_c · ∂logit/∂x_c), Gaussian-smoothed
    with sd ``sigma`` input pixels. Σ_c x_c ∂logit/∂x_c is each pixel's first-order share of the logit against an
    input of zeros (after normalisation: every channel at its mean grey); the ReLU keeps what raises the logit."""
    return gaussian_blur(torch.relu((gradients.float() * inputs.float()).sum(dim=1)), sigma)


def gradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) map A and ∂logit/∂A → (B, h, w): ReLU(Σ_c w_c A_c) with w_c the spatial mean of ∂logit/∂A_c."""
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activations.float()).sum(dim=1))


def upsample(maps: torch.Tensor, size: tuple[int, int], offset: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """(B, h, w) → (B, H, W), bilinear with cell centres aligned (``align_corners=False``): the encoder saw the
    whole slice resized to a square, so map cell (i, j) covers the same fraction of the slice on either grid.
    ``offset`` (rows, columns, in pixels of the (H, W) grid) moves every cell from its geometric centre to where
    its receptive field is centred (:func:`field_offset`); edges repeat the border cells."""
    x = maps[:, None].float()
    if offset == (0.0, 0.0):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)[:, 0]
    # grid_sample's normalised coordinates (align_corners=False): pixel p of the output samples the map at the
    # place whose cell-aligned position is p − offset
    rows = (2 * (torch.arange(size[0], dtype=torch.float32) - offset[0]) + 1) / size[0] - 1
    cols = (2 * (torch.arange(size[1], dtype=torch.float32) - offset[1]) + 1) / size[1] - 1
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1).to(x.device)
    return F.grid_sample(x, grid[None].expand(len(x), -1, -1, -1), mode="bilinear", padding_mode="border",
                         align_corners=False)[:, 0]


def field_offset(gradients: torch.Tensor, cells: list[tuple[int, int]], grid: tuple[int, int],
                 size: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """Where the cells of a map look. ``gradients`` (n, S, S): for each of the ``cells`` (row, column) of an h × w
    map over a square input of ``size`` pixels, |∂A_cell/∂x| summed over channels → (mean, sd) over the cells of
    the displacement (rows, columns, input pixels) of each field's centroid from the cell's geometric centre."""
    g = gradients.float().abs()
    pos = torch.arange(size, dtype=torch.float32)
    total = g.sum(dim=(1, 2)).clamp_min(1e-12)
    centroid_r, centroid_c = (g.sum(dim=2) * pos).sum(dim=1) / total, (g.sum(dim=1) * pos).sum(dim=1) / total
    cell = torch.tensor(cells, dtype=torch.float32)
    centre_r = (cell[:, 0] + 0.5) * size / grid[0] - 0.5
    centre_c = (cell[:, 1] + 0.5) * size / grid[1] - 0.5
    dr, dc = centroid_r - centre_r, centroid_c - centre_c
    return ((float(dr.mean()), float(dc.mean())),
            (float(dr.std(unbiased=False)), float(dc.std(unbiased=False))))


def normalise_per_target(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, T, H, W) → (maps / scale, scale (T,)) with scale the largest value of each target over all K maps (1
    where a target's maps are all zero), so relative strength between slices is kept."""
    if maps.numel() == 0:  # no instance to explain
        return maps, torch.ones(maps.shape[1])
    scale = maps.amax(dim=(0, 2, 3))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return maps / scale[None, :, None, None], scale

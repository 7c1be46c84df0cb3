"""The math of Grad-CAM heatmaps as pure functions: which logit explains a score, the channel weighting, the
upsampling to the slice's grid and the per-target normalisation of what is stored."""

from __future__ import annotations

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


def gradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) map A and ∂logit/∂A → (B, h, w): ReLU(Σ_c w_c A_c) with w_c the spatial mean of ∂logit/∂A_c."""
    weights = gradients.float().mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * activations.float()).sum(dim=1))


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) → (B, H, W), bilinear with cell centres aligned (``align_corners=False``): the encoder saw the
    whole slice resized to a square, so map cell (i, j) covers the same fraction of the slice on either grid."""
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def normalise_per_target(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, T, H, W) → (maps / scale, scale (T,)) with scale the largest value of each target over all K maps (1
    where a target's maps are all zero), so relative strength between slices is kept."""
    if maps.numel() == 0:  # no instance to explain
        return maps, torch.ones(maps.shape[1])
    scale = maps.amax(dim=(0, 2, 3))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return maps / scale[None, :, None, None], scale

"""Global pooling of a CNN's last feature map (B, C, H, W) → (B, C).

A lesion covers a few per cent of a slice: averaging over the map dilutes it by the map's size, taking the maximum
keeps it but is noisy; generalized-mean (GeM, Radenović et al. 2018) pooling, (mean x^p)^(1/p), lies between the
two (p = 1 average, p → ∞ maximum) and learns p.
"""

from __future__ import annotations

import torch
from torch import nn


def gem(x: torch.Tensor, p: torch.Tensor | float, eps: float = 1e-6) -> torch.Tensor:
    """Generalized mean over the spatial axes of (B, C, H, W) non-negative activations (clamped at ``eps``)."""
    return x.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class GeM(nn.Module):
    """GeM pooling with a learnable exponent (initial ``p``)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, self.p, self.eps)

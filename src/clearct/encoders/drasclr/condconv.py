"""Conditional 3D convolution (CondConv, Yang et al. 2019) routed by anatomical location, as in DrasCLR.

Each layer holds K expert kernels W_1..W_K (and biases). For a patch at location ``loc`` (3 numbers in [−1, 1])
the routing weights are r = sigmoid(Linear(loc)) ∈ (0, 1)^K and the patch is convolved with Σ_k r_k W_k. The
per-sample kernels are applied in one grouped convolution (batch folded into channels), not a Python loop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class CondConv3d(nn.Module):
    """(B, C_in, D, H, W) and (B, loc_dim) → (B, C_out, D', H', W') with location-mixed expert kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int | None = None,
        num_experts: int = 8,
        loc_dim: int = 3,
        bias: bool = True,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride = stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.num_experts = num_experts
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(num_experts, out_channels, in_channels, k, k, k))
        self.bias = nn.Parameter(torch.zeros(num_experts, out_channels)) if bias else None
        self.routing = nn.Linear(loc_dim, num_experts)
        fan_in = in_channels * k**3
        for w in self.weight:  # each expert initialised like an ordinary conv layer
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def routing_weights(self, loc: torch.Tensor) -> torch.Tensor:
        """(B, loc_dim) → (B, K) mixing weights in (0, 1)."""
        return torch.sigmoid(self.routing(loc))

    def forward(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        r = self.routing_weights(loc.to(x.dtype))
        kernels = torch.einsum("bk,koidhw->boidhw", r, self.weight).reshape(-1, *self.weight.shape[2:])
        bias = None if self.bias is None else (r @ self.bias).reshape(-1)
        y = F.conv3d(
            x.reshape(1, -1, *x.shape[2:]), kernels, bias, stride=self.stride, padding=self.padding, groups=b
        )
        return y.reshape(b, self.out_channels, *y.shape[2:])

    def extra_repr(self) -> str:
        k = self.weight.shape[-1]
        return f"{self.in_channels}, {self.out_channels}, kernel_size={k}, stride={self.stride}, experts={self.num_experts}"

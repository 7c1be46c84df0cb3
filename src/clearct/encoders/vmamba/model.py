"""VMamba (Liu et al. 2024) in pure PyTorch: patch embedding, VSS blocks with SS2D, downsampling, pooled output.

Configuration of ``vmamba_tiny`` (the ≈36M variant CLEAR compares): depths 2-2-9-2, widths 96-192-384-768, SS2D
with state size 1, expansion 2, Δ rank ⌈C/16⌉, 3×3 depthwise conv with bias, no z gate; MLP ratio 4; patch
embedding a 4×4 stride-4 conv + LayerNorm; downsampling a 2×2 stride-2 conv + LayerNorm; output the LayerNormed,
average-pooled stage-4 map (768-d). 35,751,072 parameters. No position embedding: any ``image_size`` (224 px
by default) runs through the same weights. Tensors flow channels-last (B, H, W, C) as in VMamba's
LayerNorm variant; parameter names follow VMamba's so its checkpoints of this configuration load.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clearct.encoders.registry import describe, register_encoder
from clearct.encoders.spatial import SpatialTap
from clearct.encoders.vit_conv import IMAGENET_MEAN, IMAGENET_STD
from clearct.encoders.vmamba.scan import (
    cross_merge,
    cross_scan,
    fused_scan_available,
    selective_scan,
    selective_scan_steps,
)

DIRECTIONS = 4
# (b, h, w, c) → (T, b, C, c) for the row-major scan (T = w: a chunk is a row) and the column-major one (T = h),
# and back
ROWS, ROWS_BACK, COLS = (2, 0, 1, 3), (1, 2, 0, 3), (1, 0, 2, 3)


class Permute(nn.Module):
    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class SS2D(nn.Module):
    """2D selective scan: in-proj → depthwise conv → SiLU → 4-direction scan → merge → LayerNorm → out-proj."""

    def __init__(self, dim: int, d_state: int = 1, ratio: float = 2.0, conv: int = 3, conv_bias: bool = True,
                 dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4):
        super().__init__()
        inner, rank = int(ratio * dim), math.ceil(dim / 16)
        self.d_state, self.rank = d_state, rank
        self.in_proj = nn.Linear(dim, inner, bias=False)
        self.conv2d = nn.Conv2d(inner, inner, conv, padding=(conv - 1) // 2, groups=inner, bias=conv_bias)
        self.act = nn.SiLU()
        bound = inner**-0.5  # nn.Linear's default init, per direction
        self.x_proj_weight = nn.Parameter(torch.empty(DIRECTIONS, rank + 2 * d_state, inner).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(torch.empty(DIRECTIONS, inner, rank).uniform_(-(rank**-0.5), rank**-0.5))
        # Δ bias = softplus⁻¹ of a log-uniform draw in [dt_min, dt_max] (Mamba's initialisation).
        dt = torch.exp(torch.rand(DIRECTIONS, inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(
            DIRECTIONS * inner, 1))
        self.Ds = nn.Parameter(torch.ones(DIRECTIONS * inner))
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.act(self.conv2d(self.in_proj(x).permute(0, 3, 1, 2)))  # (b, inner, h, w)
        y = self._fused_scan(z) if fused_scan_available(z) else self._steps_scan(z)
        y = self.out_norm(y.to(self.out_norm.weight.dtype))  # (b, h, w, inner)
        return self.out_proj(y.to(x.dtype))

    def _steps_scan(self, z: torch.Tensor) -> torch.Tensor:
        """The four directions blockwise (scan.py): (b, inner, h, w) → (b, h, w, inner).

        Each direction's sequence is held as (T, b, C, inner) with channels last, as the conv wrote them: the
        row-major one as (w, b, h, inner) (its chunks are the rows), the column-major one as (h, b, w, inner); the
        reversed directions are the same tensors scanned from the end. For a square map the two families are
        stacked (k = 2) and scanned in one pass.
        """
        _, inner, h, w = z.shape
        z = z.permute(0, 2, 3, 1)  # (b, h, w, inner)
        # x_proj of all four directions is one GEMM over the map; its small result is rearranged per direction
        proj = F.linear(z, self.x_proj_weight.reshape(-1, inner)).unflatten(-1, (DIRECTIONS, -1))
        to_steps, from_steps = [ROWS, COLS], [ROWS_BACK, COLS]  # row-major (directions 0, 2), column-major (1, 3)
        families = [[0, 1]] if h == w else [[0], [1]]
        D = self.Ds.view(DIRECTIONS, 1, 1, 1, inner)
        y = None
        for family in families:
            u = torch.stack([z.permute(to_steps[k]) for k in family])  # (k, T, b, C, inner)
            forward, backward = ([self._directions(u, [proj[:, :, :, k + shift].permute(to_steps[k]) for k in family],
                                                   [k + shift for k in family], reverse=shift > 0)
                                  for shift in (0, 2)])
            # the skip term D·u of a direction and of its reverse, added once
            out = forward.add_(backward).addcmul_(D[family] + D[[k + 2 for k in family]], u)
            # back to (b, h, w, inner); unbind, not indexing: its gradient is one stacked tensor in this layout
            for k, part in zip(family, out.unbind(0)):
                y = part.permute(from_steps[k]) if y is None else y + part.permute(from_steps[k])
        assert y is not None  # the families cover every direction
        return y

    def _directions(self, u: torch.Tensor, proj: list[torch.Tensor], directions: list[int], *,
                    reverse: bool) -> torch.Tensor:
        """Selective scan of u (k, T, b, C, inner) with the x_proj outputs (T, b, C, rank + 2n) of k directions."""
        k, inner, n = len(directions), u.shape[-1], self.d_state
        dts, B, C = torch.split(torch.stack(proj), [self.rank, n, n], dim=-1)  # (k, T, b, C, ·)
        # Δ of each direction is one GEMM over all its positions; its bias rides in it as a row of dt_proj against
        # a column of ones (a separate bias would cost a pass over Δ's gradient)
        dts = torch.cat([dts.reshape(k, -1, self.rank), torch.ones_like(dts[..., :1]).reshape(k, -1, 1)], dim=2)
        weight = torch.cat([self.dt_projs_weight[directions], self.dt_projs_bias[directions, :, None]], dim=2)
        delta = torch.bmm(dts, weight.transpose(1, 2).to(dts.dtype)).view(u.shape)
        A = -torch.exp(self.A_logs.float()).view(DIRECTIONS, inner, n)[directions].view(k, 1, 1, 1, inner, n)
        return selective_scan_steps(u, delta, A, B[..., None, :], C[..., None, :], None, step_dim=1, chunk_dim=3,
                                    reverse=reverse)

    def _fused_scan(self, z: torch.Tensor) -> torch.Tensor:
        """mamba_ssm's CUDA kernel in its (b, d, l) layout."""
        b, _, h, w = z.shape
        xs = cross_scan(z)  # (b, 4, inner, L)
        inner, length = xs.shape[2], xs.shape[3]
        proj = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight.to(xs.dtype))
        dts, Bs, Cs = torch.split(proj, [self.rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight.to(dts.dtype))
        ys = selective_scan(xs.reshape(b, -1, length), dts.reshape(b, -1, length), -torch.exp(self.A_logs.float()),
                            Bs, Cs, self.Ds, self.dt_projs_bias.reshape(-1))
        return cross_merge(ys.reshape(b, DIRECTIONS, inner, length), h, w).transpose(1, 2).reshape(b, h, w, inner)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    """x + SS2D(LN(x)), then x + MLP(LN(x)) (pre-norm residual branches)."""

    def __init__(self, dim: int, d_state: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm, self.op = nn.LayerNorm(dim), SS2D(dim, d_state=d_state)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.op(self.norm(x))
        return x + self.mlp(self.norm2(x))


def _downsample(dim: int, out: int) -> nn.Sequential:
    return nn.Sequential(Permute(0, 3, 1, 2), nn.Conv2d(dim, out, 2, stride=2), Permute(0, 2, 3, 1),
                         nn.LayerNorm(out))


class VMamba(nn.Module):
    """(B, 3, H, W) → (B, dims[-1]): patch embed, 4 stages of VSS blocks, LayerNorm, global average pool."""

    def __init__(self, depths: Sequence[int] = (2, 2, 9, 2), dim: int = 96, d_state: int = 1, patch: int = 4):
        super().__init__()
        dims = [dim * 2**i for i in range(len(depths))]
        self.patch_embed = nn.Sequential(nn.Conv2d(3, dim, patch, stride=patch), Permute(0, 2, 3, 1),
                                         nn.LayerNorm(dim))
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            stage: OrderedDict[str, nn.Module] = OrderedDict(
                blocks=nn.Sequential(*[VSSBlock(dims[i], d_state) for _ in range(depth)]))
            stage["downsample"] = _downsample(dims[i], dims[i + 1]) if i + 1 < len(depths) else nn.Identity()
            self.layers.append(nn.Sequential(stage))
        self.classifier = nn.Sequential(OrderedDict(norm=nn.LayerNorm(dims[-1])))
        self.num_features = dims[-1]
        self.apply(self._init_linear)

    @staticmethod
    def _init_linear(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.classifier(x).mean(dim=(1, 2))


def vmamba(name: str, *, depths: Sequence[int], dim: int, input_size: int = 224) -> nn.Module:
    model = VMamba(depths=depths, dim=dim)
    return describe(model, encoder_name=name, embed_dim=model.num_features, input_size=input_size,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, ignore_prefixes=("classifier.head.",),
                    spatial_map=SpatialTap("classifier", "output", "nhwc"))  # the normed stage-4 map


@register_encoder("vmamba_tiny")
def vmamba_tiny(*, image_size: int | None = None) -> nn.Module:
    """VMamba-T (≈36M): depths 2-2-9-2, width 96, state size 1, no z gate; 768-d."""
    return vmamba("vmamba_tiny", depths=(2, 2, 9, 2), dim=96, input_size=image_size or 224)


@register_encoder("vmamba_test")
def vmamba_test(*, image_size: int | None = None) -> nn.Module:
    """Tiny test configuration: one block per stage, width 16, 64 px input; 128-d."""
    return vmamba("vmamba_test", depths=(1, 1, 1, 1), dim=16, input_size=image_size or 64)

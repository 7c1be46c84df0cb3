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
from torch import nn

from clearct.encoders.registry import describe, register_encoder
from clearct.encoders.vit_conv import IMAGENET_MEAN, IMAGENET_STD
from clearct.encoders.vmamba.scan import (
    cross_merge,
    cross_scan,
    fused_scan_available,
    selective_scan,
    selective_scan_steps,
)

DIRECTIONS = 4


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

    def _weights(self, directions: list[int]) -> tuple[torch.Tensor, ...]:
        """x_proj, dt_proj, A (k, d, n), D and Δ bias (k, d) of the given directions."""
        inner = self.dt_projs_weight.shape[1]
        A = -torch.exp(self.A_logs.float()).view(DIRECTIONS, inner, self.d_state)
        return (self.x_proj_weight[directions], self.dt_projs_weight[directions], A[directions],
                self.Ds.view(DIRECTIONS, inner)[directions], self.dt_projs_bias[directions])

    def _steps_scan(self, z: torch.Tensor) -> torch.Tensor:
        """The four directions in the steps-first layout (scan.py): (b, inner, h, w) → (b, h, w, inner)."""
        _, _, h, w = z.shape
        rows, cols = z.permute(3, 0, 1, 2), z.permute(2, 0, 1, 3)  # (w, b, inner, h): chunk = row; (h, b, inner, w)
        if h == w:  # both families in one pass
            families = [(torch.stack([rows, cols], dim=2), [0, 1])]
        else:
            families = [(rows.unsqueeze(2).contiguous(), [0]), (cols.unsqueeze(2).contiguous(), [1])]
        parts = []
        for u, forward in families:
            backward = [k + 2 for k in forward]  # the reversed directions: the same tensors, scanned from the end
            y = self._directions(u, forward, reverse=False).add_(self._directions(u, backward, reverse=True))
            for i, k in enumerate(forward):  # back to (b, h, w, inner)
                parts.append(y[:, :, i].permute(1, 3, 0, 2) if k == 0 else y[:, :, i].permute(1, 0, 3, 2))
        row_major, col_major = parts
        return (row_major + col_major).contiguous()

    def _directions(self, u: torch.Tensor, directions: list[int], *, reverse: bool) -> torch.Tensor:
        """Selective scan of steps-first u (T, b, k, inner, C) with the weights of k directions."""
        x_proj, dt_proj, A, D, bias = self._weights(directions)
        proj = torch.matmul(x_proj.to(u.dtype), u)  # (T, b, k, rank + 2n, C)
        dts, Bs, Cs = torch.split(proj, [self.rank, self.d_state, self.d_state], dim=3)
        # Δ's bias rides in the matmul as a column of dt_proj against a row of ones: no pass over (…, inner, C)
        ones = torch.ones_like(dts[:, :, :, :1])
        delta = torch.matmul(torch.cat([dt_proj, bias[..., None]], dim=2).to(dts.dtype), torch.cat([dts, ones], 3))
        return selective_scan_steps(u, delta, A, Bs, Cs, D, None, reverse=reverse)

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
            stage = OrderedDict(blocks=nn.Sequential(*[VSSBlock(dims[i], d_state) for _ in range(depth)]))
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
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, ignore_prefixes=("classifier.head.",))


@register_encoder("vmamba_tiny")
def vmamba_tiny(*, image_size: int | None = None) -> nn.Module:
    """VMamba-T (≈36M): depths 2-2-9-2, width 96, state size 1, no z gate; 768-d."""
    return vmamba("vmamba_tiny", depths=(2, 2, 9, 2), dim=96, input_size=image_size or 224)


@register_encoder("vmamba_test")
def vmamba_test(*, image_size: int | None = None) -> nn.Module:
    """Tiny test configuration: one block per stage, width 16, 64 px input; 128-d."""
    return vmamba("vmamba_test", depths=(1, 1, 1, 1), dim=16, input_size=image_size or 64)

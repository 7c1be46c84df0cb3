"""VMamba's 2D selective scan pieces as pure tensor functions: cross-scan, cross-merge and the selective scan.

The selective scan (Mamba's S6) per channel d and state n, with Δ_t = softplus(δ_t + bias_d):

    h_t = exp(Δ_t A_dn) h_{t−1} + Δ_t B_tn u_t,        y_t = Σ_n C_tn h_tn + D_d u_t.

On CPU (and on GPUs without ``mamba_ssm``) it runs as a blockwise scan: the sequence is cut into chunks of T
positions; one pass steps through the T positions of *all* chunks at once (T vectorised steps, starting each chunk
from zero), a second short loop carries the chunk-end states across the L/T chunks, and the carried state enters
every position through the chunk's cumulative decay (a cumprod, values in (0, 1], so nothing overflows, unlike the
exp(−cumsum) factorisation). That is T + L/T ≈ 2√L small steps instead of L, and O(L) work. With ``mamba_ssm``
importable and the tensors on CUDA, its fused kernel computes the same function.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, 4, C, H·W): row-major, column-major, and both reversed."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    fwd = torch.stack([rows, cols], dim=1)
    return torch.cat([fwd, fwd.flip(-1)], dim=1)


def cross_merge(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 4, C, H·W) → (B, C, H·W): each direction restored to row-major order, then summed."""
    b, _, c, length = ys.shape
    pair = ys[:, :2] + ys[:, 2:].flip(-1)
    cols = pair[:, 1].reshape(b, c, width, height).transpose(2, 3).reshape(b, c, length)
    return pair[:, 0] + cols


def _mamba_ssm_scan():
    """mamba_ssm's fused selective scan, or None when the package (or its CUDA build) is missing."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a CUDA extension that fails to load
        return None
    return selective_scan_fn


def default_chunk(length: int) -> int:
    """≈√L rounded up to a multiple of 8: balances the in-chunk and the across-chunk loops."""
    return max(8, 8 * math.ceil(math.sqrt(length) / 8))


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
    *,
    chunk: int | None = None,
    fused: bool = True,
) -> torch.Tensor:
    """Selective scan with softplus(δ + bias); shapes as mamba_ssm's ``selective_scan_fn``.

    u, delta: (b, d, l); A: (d, n); B, C: (b, g, n, l) with the d channels in g equal groups; D, delta_bias: (d,).
    Returns y (b, d, l) in float32 (the fused kernel returns u's dtype).
    """
    if fused and u.is_cuda:
        kernel = _mamba_ssm_scan()
        if kernel is not None:
            return kernel(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
                          D.float(), delta_bias=delta_bias.float(), delta_softplus=True)
    return chunked_scan(u, delta, A, B, C, D, delta_bias, chunk=chunk)


def chunked_scan(u, delta, A, B, C, D, delta_bias, *, chunk: int | None = None) -> torch.Tensor:
    """The blockwise scan described in the module docstring (float32, or float64 if given float64)."""
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    b, d, length = u.shape
    g, n = B.shape[1], A.shape[1]
    T = chunk or default_chunk(length)
    chunks = -(-length // T)
    # Everything is laid out (T, ..., chunks) from here on: step t of all chunks is one contiguous slab. Padding
    # with Δ = 0 gives decay 1 and input 0, so padded positions never feed real ones.
    dt = _steps_first(F.softplus(delta.to(dtype) + delta_bias.to(dtype)[:, None]), chunks, T)  # (T, b, d, c)
    us = _steps_first(u.to(dtype), chunks, T)
    Bs = _steps_first(B.to(dtype), chunks, T)  # (T, b, g, n, c)
    Cs = _steps_first(C.to(dtype), chunks, T)
    # Channels split as (group, channel-in-group) so the grouped B, C broadcast rather than being copied.
    dt_g = dt.view(T, b, g, d // g, 1, chunks)
    decay = torch.exp(dt_g * A.to(dtype).view(1, 1, g, d // g, n, 1))  # (T, b, g, dg, n, c), in (0, 1]
    x = (dt * us).view(T, b, g, d // g, 1, chunks) * Bs[:, :, :, None]  # Δ_t B_t u_t

    states = [x[0]]
    for t in range(1, T):
        states.append(decay[t] * states[-1] + x[t])
    local = torch.stack(states)  # every chunk started from zero
    gain = torch.cumprod(decay, dim=0)  # decay from the chunk start to t, inclusive

    carries = [torch.zeros_like(local[0, ..., 0])]
    for c in range(chunks - 1):
        carries.append(gain[-1, ..., c] * carries[-1] + local[-1, ..., c])
    hs = local + gain * torch.stack(carries, dim=-1)  # + the state entering each chunk

    y = (hs * Cs[:, :, :, None]).sum(dim=4).reshape(T, b, d, chunks) + D.to(dtype)[:, None] * us
    return y.permute(1, 2, 3, 0).reshape(b, d, chunks * T)[..., :length]


def _steps_first(x: torch.Tensor, chunks: int, T: int) -> torch.Tensor:
    """(..., L) → (T, ..., chunks), zero-padded to chunks·T and contiguous."""
    x = F.pad(x, (0, chunks * T - x.shape[-1]))
    return x.reshape(*x.shape[:-1], chunks, T).movedim(-1, 0).contiguous()


def reference_scan(u, delta, A, B, C, D, delta_bias) -> torch.Tensor:
    """The definition, one position at a time (slow; the yardstick for tests and the benchmark)."""
    b, d, length = u.shape
    Bd = B.repeat_interleave(d // B.shape[1], dim=1)  # (b, d, n, l)
    Cd = C.repeat_interleave(d // C.shape[1], dim=1)
    dt = F.softplus(delta + delta_bias[:, None])
    h = torch.zeros(b, d, A.shape[1], dtype=u.dtype, device=u.device)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, :, t, None] * A) * h + (dt[:, :, t] * u[:, :, t])[:, :, None] * Bd[:, :, :, t]
        ys.append((h * Cd[:, :, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, dim=-1)

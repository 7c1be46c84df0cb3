"""VMamba's 2D selective scan pieces as pure tensor functions: cross-scan, cross-merge and the selective scan.

The selective scan (Mamba's S6) per channel d and state n, with Δ_t = softplus(δ_t + bias_d):

    h_t = exp(Δ_t A_dn) h_{t−1} + Δ_t B_tn u_t,        y_t = Σ_n C_tn h_tn + D_d u_t.

On CPU (and on GPUs without ``mamba_ssm``) it runs as a blockwise scan: a sequence of L = C·T positions is held
with a *step* axis t and a *chunk* axis c — position l = c·T + t — so step t of all C chunks is one slab. One
in-place pass steps through the T positions of every chunk at once (each chunk starting from zero), a short loop
carries the chunk-end states across the C chunks, and a last pass adds the carried state times the running decay
(products of values in (0, 1]: nothing overflows, unlike an exp(−cumsum) scheme). That is ≈ 3T + C small
in-place steps instead of L, O(L) work, and no autograd graph over the steps: the recurrence is one autograd
function whose backward is the same scan run the other way (:func:`linear_scan`). The two axes can sit anywhere in
the tensors, so callers keep their own memory layout and pay no rearranging copies.

SS2D holds the map channels-last, as its conv writes it: with a square map the rows are the chunks of the
row-major direction (T = W) and the columns those of the column-major one (T = H), so the cross-scan is one
permuted copy, the reversed directions are the same tensors scanned backwards, no flip or pad is ever made, and
the projections (x_proj, Δ) are single GEMMs over all positions. With ``mamba_ssm`` importable and the tensors on
CUDA, its fused kernel computes the same function in the usual (b, d, l) layout.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

LOG2E = 1.0 / math.log(2.0)


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


@functools.cache  # asked once per SS2D block and forward: a failing import is not retried each time
def _mamba_ssm_scan():
    """mamba_ssm's fused selective scan, or None when the package (or its CUDA build) is missing."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a CUDA extension that fails to load
        return None
    return selective_scan_fn


def fused_scan_available(x: torch.Tensor) -> bool:
    return x.is_cuda and _mamba_ssm_scan() is not None


def default_chunk(length: int) -> int:
    """≈√L rounded up to a multiple of 8: balances the in-chunk and the across-chunk loops."""
    return max(8, 8 * math.ceil(math.sqrt(length) / 8))


# --- the linear recurrence h_l = a_l h_{l−1} + x_l, blockwise -----------------------------------------------------

def _from_previous(z: torch.Tensor) -> torch.Tensor:
    """out_l = z_{l−1} in sequence order (l = c·T + t of a (T, ..., C) tensor), 0 at l = 0."""
    out = torch.empty_like(z)
    out[1:] = z[:-1]
    out[0, ..., 1:] = z[-1, ..., :-1]
    out[0, ..., 0] = 0
    return out


def _from_next(z: torch.Tensor) -> torch.Tensor:
    """out_l = z_{l+1} in sequence order, 0 at the last position."""
    out = torch.empty_like(z)
    out[:-1] = z[1:]
    out[-1, ..., :-1] = z[0, ..., 1:]
    out[-1, ..., -1] = 0
    return out


@torch.no_grad()
def _scan(a: torch.Tensor, h: torch.Tensor, reverse: bool) -> torch.Tensor:
    """h_l ← a_l h_{l∓1} + h_l over (T, ..., C) views of dense tensors, forward (l ascending) or reverse, in place."""
    steps, chunks = h.shape[0], h.shape[-1]
    order = range(steps - 2, -1, -1) if reverse else range(1, steps)
    for t in order:  # every chunk from a zero state, all chunks at once
        h[t].addcmul_(a[t], h[t + 1 if reverse else t - 1])
    if chunks == 1:
        return h
    # States at each chunk's far end, carried across chunks: E_c = local_c + (Π_t a_tc) E_{c∓1}.
    # Every temporary keeps h's memory order (empty_like/clone preserve it; a reduction's own output would not).
    ends = h[0 if reverse else -1].movedim(-1, 0).clone()
    through = torch.prod(a, dim=0, out=torch.empty_like(a[0])).movedim(-1, 0)
    for c in (range(chunks - 2, -1, -1) if reverse else range(1, chunks)):
        ends[c].addcmul_(through[c], ends[c + 1 if reverse else c - 1])
    carry = torch.empty_like(h[0])  # the state entering each chunk
    if reverse:
        carry[..., :-1], carry[..., -1] = ends[1:].movedim(0, -1), 0
    else:
        carry[..., 1:], carry[..., 0] = ends[:-1].movedim(0, -1), 0
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):  # + carry × decay since the chunk start
        carry.mul_(a[t])
        h[t].add_(carry)
    return h


def _steps_view(x: torch.Tensor, axes: tuple[int, int]) -> torch.Tensor:
    """x seen as (T, ..., C): its step axis first and its chunk axis last (a view: writes reach x)."""
    step, chunk = axes
    return x.permute(step, *[i for i in range(x.dim()) if i not in axes], chunk)


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, x, reverse, axes):
        _scan(_steps_view(a, axes), _steps_view(x, axes), reverse)  # x becomes h: the backward needs only a and h
        ctx.mark_dirty(x)
        ctx.save_for_backward(a, x)
        ctx.reverse, ctx.axes = reverse, axes
        return x

    @staticmethod
    def backward(ctx, grad_h):
        a, h = ctx.saved_tensors
        g = torch.empty_like(h).copy_(grad_h)  # in h's memory order, whatever layout the gradient arrives in
        # The adjoint is the same recurrence run the other way: g_l = ∂L/∂h_l + a_{l±1} g_{l±1};
        # then ∂L/∂x_l = g_l and ∂L/∂a_l = g_l h_{l∓1}.
        shift_a, shift_h = (_from_previous, _from_next) if ctx.reverse else (_from_next, _from_previous)
        g_steps = _steps_view(g, ctx.axes)
        _scan(shift_a(_steps_view(a, ctx.axes)), g_steps, reverse=not ctx.reverse)
        grad_a = g_steps * shift_h(_steps_view(h, ctx.axes))
        return grad_a.permute(_inverse(a.dim(), ctx.axes)), g, None, None


def _inverse(ndim: int, axes: tuple[int, int]) -> list[int]:
    """The permutation that undoes :func:`_steps_view`."""
    order = [axes[0], *[i for i in range(ndim) if i not in axes], axes[1]]
    return sorted(range(ndim), key=order.__getitem__)


def linear_scan(a: torch.Tensor, x: torch.Tensor, *, step_dim: int = 0, chunk_dim: int = -1, reverse: bool = False,
                inplace: bool = False) -> torch.Tensor:
    """h_l = a_l h_{l−1} + x_l (``reverse``: h_l = a_l h_{l+1} + x_l) along the sequence l = c·T + t, where t
    indexes ``step_dim`` and c ``chunk_dim`` of a and x (one shape), starting from zero; differentiable in ``a`` and
    ``x``. ``inplace``: x (a dense temporary of the caller's) is overwritten with h, saving a copy."""
    axes = (step_dim % x.dim(), chunk_dim % x.dim())
    if not inplace:
        x = x.clone(memory_format=torch.preserve_format)
    return _LinearScan.apply(a, x, reverse, axes)


class _FastSoftplus(torch.autograd.Function):
    """softplus(z) = max(z, 0) − ln σ(|z|): this CPU build's softplus, log1p and logsigmoid kernels are scalar, while
    sigmoid and log (of values in [½, 1)) are vectorised (benchmarks/RESULTS.md "vmamba"); float32 within 1e-6."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return torch.clamp_min(z, 0.0).sub_(torch.abs(z).sigmoid_().log_())

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * torch.sigmoid(z)


def softplus(z: torch.Tensor) -> torch.Tensor:
    return _FastSoftplus.apply(z) if z.dtype == torch.float32 and not z.is_cuda else F.softplus(z)


def selective_scan_steps(u, delta, A, B, C, D, *, step_dim: int, chunk_dim: int, reverse: bool = False):
    """The selective scan on blockwise tensors: the sequence l = c·T + t runs along u's ``step_dim`` (t) and
    ``chunk_dim`` (c); every other axis is independent (images, directions, channels).

    u, delta (Δ before the softplus, bias included): one shape S. A, B, C: broadcastable against S + (n,), the state
    axis last (B and C reach the channels that share them by broadcasting). D: broadcastable against S, or None to
    leave out the D·u term (a caller summing directions adds it once). Returns y (shape S) in float32 (float64 if u
    is float64).
    """
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, B, C = u.to(dtype), B.to(dtype), C.to(dtype)
    dt = softplus(delta.to(dtype))
    # exp(Δ A) as exp2(Δ · A log2 e): this build's exp2 is ≈ 3× faster than its exp (float32 within 4e-6 relative)
    A = A.to(dtype) * LOG2E
    scan = dict(step_dim=step_dim % u.dim(), chunk_dim=chunk_dim % u.dim(), reverse=reverse, inplace=True)
    if A.shape[-1] == 1:  # VMamba's state size: no state axis at all
        # (dt · u) · B out of place: an in-place product would make autograd keep a copy of dt · u
        y = linear_scan(torch.mul(dt, A[..., 0]).exp2_(), dt * u * B[..., 0], **scan) * C[..., 0]
    else:
        decay = torch.mul(dt[..., None], A).exp2_()  # S + (n,)
        y = (linear_scan(decay, (dt * u)[..., None] * B, **scan) * C).sum(dim=-1)
    return y if D is None else y.addcmul_(D.to(dtype), u)


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
    if fused and fused_scan_available(u):
        return _mamba_ssm_scan()(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(),
                                 D.float(), delta_bias=delta_bias.float(), delta_softplus=True)
    return chunked_scan(u, delta, A, B, C, D, delta_bias, chunk=chunk)


def chunked_scan(u, delta, A, B, C, D, delta_bias, *, chunk: int | None = None) -> torch.Tensor:
    """:func:`selective_scan_steps` for (b, d, l) tensors, in chunks of ``chunk`` positions (zero-padded at the end,
    where padding cannot reach a real position): (b, g, d/g, L) viewed as (b, g, d/g, chunks, T)."""
    b, d, length = u.shape
    g = B.shape[1]
    T = chunk or default_chunk(length)
    chunks = -(-length // T)

    def blocks(x: torch.Tensor) -> torch.Tensor:  # (..., L) → (..., chunks, T)
        return F.pad(x, (0, chunks * T - length)).unflatten(-1, (chunks, T))

    def per_channel(x: torch.Tensor) -> torch.Tensor:  # (d, ...) → (g, d/g, 1, 1, ...)
        return x.reshape(g, d // g, 1, 1, *x.shape[1:])

    def state_last(x: torch.Tensor) -> torch.Tensor:  # (b, g, n, L) → (b, g, 1, chunks, T, n)
        return blocks(x).movedim(2, -1).unsqueeze(2)

    y = selective_scan_steps(blocks(u.reshape(b, g, d // g, length)),
                             blocks(delta.reshape(b, g, d // g, length)) + per_channel(delta_bias),
                             per_channel(A), state_last(B), state_last(C), per_channel(D), step_dim=-1, chunk_dim=-2)
    return y.reshape(b, d, chunks * T)[..., :length]


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

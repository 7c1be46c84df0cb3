"""VMamba's scan pieces: the chunked selective scan against a per-step reference, cross-scan/merge, SS2D."""

from __future__ import annotations

import pytest
import torch

from clearct.encoders.vmamba.scan import (
    chunked_scan,
    cross_merge,
    cross_scan,
    linear_scan,
    selective_scan,
    softplus,
)
from clearct.encoders.vmamba.scan import reference_scan as naive_scan


def _random_inputs(b=2, g=2, dg=3, n=3, length=37, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    d = g * dg

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype)

    A = -torch.exp(r(d, n, scale=0.5))  # negative real parts, as VMamba's −exp(A_log)
    return r(b, d, length), r(b, d, length), A, r(b, g, n, length), r(b, g, n, length), r(d), r(d, scale=0.5)


@pytest.mark.parametrize("chunk", [1, 5, 8, 16, 37, 64])
def test_chunked_scan_equals_per_step_reference(chunk):
    args = _random_inputs()
    expected = naive_scan(*args)
    got = chunked_scan(*args, chunk=chunk)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_chunked_scan_default_chunk_long_sequence_and_strong_decay():
    # L = 200 is not a multiple of the default chunk (16); large Δ·|A| would overflow an exp(−cumsum) scheme.
    u, delta, A, B, C, D, bias = _random_inputs(length=200, seed=3)
    args = (u, delta * 4 + 6, A * 30, B, C, D, bias)
    expected = naive_scan(*args)
    got = selective_scan(*args)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n", [1, 3])  # 1: VMamba's state size, which takes the path without a state axis
def test_chunked_scan_gradients_match_reference(n):
    leaves = [a.clone().requires_grad_(True) for a in _random_inputs(b=1, n=n, length=23, seed=7)]
    ref_leaves = [a.detach().clone().requires_grad_(True) for a in leaves]
    weights = torch.randn(1, 6, 23, dtype=torch.float64)
    (chunked_scan(*leaves, chunk=6) * weights).sum().backward()
    (naive_scan(*ref_leaves) * weights).sum().backward()
    for got, ref in zip(leaves, ref_leaves):
        torch.testing.assert_close(got.grad, ref.grad, rtol=1e-9, atol=1e-9)


def test_chunked_scan_float32_is_close_to_float64():
    args64 = _random_inputs(length=100, seed=11)
    args32 = [a.float() for a in args64]
    got = chunked_scan(*args32, chunk=16)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), naive_scan(*args64), rtol=1e-4, atol=1e-4)


def test_cross_scan_orders_and_merge_of_a_ramp_gives_four_times_the_input():
    b, c, h, w = 2, 3, 4, 5
    x = torch.arange(b * c * h * w, dtype=torch.float32).reshape(b, c, h, w)
    xs = cross_scan(x)
    assert xs.shape == (b, 4, c, h * w)
    assert torch.equal(xs[0, 0, 0, :w], x[0, 0, 0])  # row-major: the first row first
    assert torch.equal(xs[0, 1, 0, :h], x[0, 0, :, 0])  # column-major: the first column first
    assert torch.equal(xs[:, 2], xs[:, 0].flip(-1)) and torch.equal(xs[:, 3], xs[:, 1].flip(-1))
    merged = cross_merge(xs, h, w)
    assert torch.equal(merged, 4 * x.flatten(2))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("shape", [(5, 2, 3, 1), (4, 1, 2, 6), (1, 3, 7)])
def test_linear_scan_equals_the_recurrence_and_its_gradients_check(shape, reverse):
    gen = torch.Generator().manual_seed(5)
    a = torch.rand(*shape, generator=gen, dtype=torch.float64).requires_grad_(True)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_(True)
    # the definition over the flattened sequence l = c·T + t, one position at a time
    steps, chunks = shape[0], shape[-1]
    flat_a = a.detach().movedim(0, -1).reshape(*shape[1:-1], chunks * steps)
    flat_x = x.detach().movedim(0, -1).reshape(*shape[1:-1], chunks * steps)
    h, expected = torch.zeros_like(flat_x[..., 0]), torch.empty_like(flat_x)
    for pos in (range(chunks * steps - 1, -1, -1) if reverse else range(chunks * steps)):
        h = flat_a[..., pos] * h + flat_x[..., pos]
        expected[..., pos] = h
    got = linear_scan(a, x, reverse=reverse)
    torch.testing.assert_close(got.movedim(0, -1).reshape(expected.shape), expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, x: linear_scan(a, x, reverse=reverse), (a, x))


@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_along_inner_axes_equals_the_steps_first_scan(reverse):
    # SS2D's layout (k, T, b, C, d): steps on axis 1, chunks on axis 3, channels last
    gen = torch.Generator().manual_seed(9)
    a = torch.rand(2, 4, 1, 3, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
    x = torch.randn(2, 4, 1, 3, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
    got = linear_scan(a, x, step_dim=1, chunk_dim=3, reverse=reverse)
    steps_first = lambda t: t.permute(1, 0, 2, 4, 3)  # noqa: E731 — (T, k, b, d, C)
    expected = linear_scan(steps_first(a), steps_first(x), reverse=reverse)
    torch.testing.assert_close(steps_first(got), expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, x: linear_scan(a, x, step_dim=1, chunk_dim=3, reverse=reverse), (a, x))


def test_fast_softplus_matches_torch_in_value_and_gradient():
    z = (torch.randn(10_000, dtype=torch.float64) * 8).float().requires_grad_(True)
    z_ref = z.detach().clone().requires_grad_(True)
    got, ref = softplus(z), torch.nn.functional.softplus(z_ref)
    torch.testing.assert_close(got, ref, rtol=2e-6, atol=2e-6)
    got.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("h, w", [(3, 4), (4, 4)])
def test_ss2d_matches_a_direction_by_direction_recomputation(h, w):
    from clearct.encoders.vmamba.model import SS2D

    torch.manual_seed(0)
    op = SS2D(8).double()
    x = torch.randn(1, h, w, 8, dtype=torch.float64)
    out = op(x)
    # Recompute each direction separately with the reference scan, restore its order and sum.
    z = op.act(op.conv2d(op.in_proj(x).permute(0, 3, 1, 2)))
    inner = z.shape[1]
    total = torch.zeros(1, inner, h, w, dtype=torch.float64)
    sequences = [z.flatten(2), z.transpose(2, 3).flatten(2)]
    for k in range(4):
        seq = sequences[k % 2].flip(-1) if k >= 2 else sequences[k % 2]
        proj = torch.einsum("bdl,cd->bcl", seq, op.x_proj_weight[k])
        dts, Bk, Ck = torch.split(proj, [op.rank, op.d_state, op.d_state], dim=1)
        dts = torch.einsum("brl,dr->bdl", dts, op.dt_projs_weight[k])
        rows = slice(k * inner, (k + 1) * inner)
        y = naive_scan(seq, dts, -torch.exp(op.A_logs[rows]), Bk[:, None], Ck[:, None], op.Ds[rows],
                       op.dt_projs_bias[k])
        y = y.flip(-1) if k >= 2 else y
        total += y.reshape(1, inner, h, w) if k % 2 == 0 else y.reshape(1, inner, w, h).transpose(2, 3)
    expected = op.out_proj(op.out_norm(total.permute(0, 2, 3, 1)))
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("h, w", [(3, 4), (5, 5)])
def test_ss2d_float32_fast_path_is_close_to_float64(h, w):
    # float32 on CPU takes the fast softplus and exp2 kernels; float64 the exact ones
    from clearct.encoders.vmamba.model import SS2D

    torch.manual_seed(1)
    op = SS2D(16)
    x = torch.randn(2, h, w, 16)
    got = op(x)
    expected = op.double()(x.double())
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("h, w", [(2, 3), (3, 3)])
@pytest.mark.slow
def test_ss2d_gradients_check_against_finite_differences(h, w):
    # the whole block: the stacked directions, the GEMM projections, the scan and the merge back
    from clearct.encoders.vmamba.model import SS2D

    torch.manual_seed(2)
    op = SS2D(4).double()
    x = torch.randn(1, h, w, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(op, (x,))
    names = ["x_proj_weight", "dt_projs_weight", "dt_projs_bias", "A_logs", "Ds"]
    params = tuple(getattr(op, n).detach().clone().requires_grad_(True) for n in names)
    assert torch.autograd.gradcheck(
        lambda *ps: torch.func.functional_call(op, dict(zip(names, ps)), (x.detach(),)), params)

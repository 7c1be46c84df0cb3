"""Windowing numerics, whole-volume rendering and slice selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clearct.common.errors import ClearctError
from clearct.io import CTVolume
from clearct.preprocess import WINDOW_PRESETS, Window, parse_windows, render_slices, select_slices, window_hu


def test_presets_are_the_papers_windows() -> None:
    assert WINDOW_PRESETS["abdomen"] == (-175, 275)
    assert WINDOW_PRESETS["lung"] == (-1500, 500)


def test_parse_windows_presets_custom_and_lists() -> None:
    assert parse_windows("lung,abdomen") == [Window("lung", -1500, 500), Window("abdomen", -175, 275)]
    assert parse_windows(["bone:-450:1050", "lung"]) == [Window("bone", -450, 1050), Window("lung", -1500, 500)]
    assert parse_windows(" abdomen ") == [Window("abdomen", -175, 275)]


@pytest.mark.parametrize("spec", ["liver", "x:1:0", "x:a:b", "", "lung,lung", "x:1"])
def test_parse_windows_rejects_bad_specs(spec: str) -> None:
    with pytest.raises(ClearctError):
        parse_windows(spec)


def test_window_hu_at_and_beyond_the_edges() -> None:
    hu = torch.tensor([-3024, -176, -175, -174, 50, 274, 275, 276, 3071], dtype=torch.int16)
    got = window_hu(hu, -175, 275)
    assert got.dtype == torch.float32
    want = torch.tensor([0, 0, 0, 1 / 450, 0.5, 449 / 450, 1, 1, 1], dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    # numpy input works and gives the same numbers
    torch.testing.assert_close(window_hu(hu.numpy(), -175, 275), want, rtol=0, atol=1e-7)


def test_render_slices_shape_order_and_normalisation() -> None:
    rng = np.random.default_rng(0)
    hu = rng.integers(-1200, 1500, size=(3, 40, 40)).astype(np.int16)
    hu[1] = 0  # slice 1 is constant 0 HU
    windows = parse_windows("lung,abdomen")
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    x = render_slices(hu, windows, 40, mean=mean, std=std)
    assert x.shape == (3, 2, 3, 40, 40) and x.dtype == torch.float32
    # no resize when sizes match: exact window values per channel, in (slice, window) order
    for wi, win in enumerate(windows):
        for c in range(3):
            ref = (window_hu(hu, win.lo, win.hi) - mean[c]) / std[c]
            torch.testing.assert_close(x[:, wi, c], ref)
    lung0 = (0 + 1500) / 2000
    abd0 = 175 / 450
    assert torch.allclose(x[1, 0, 0], torch.full((40, 40), (lung0 - 0.1) / 0.5))
    assert torch.allclose(x[1, 1, 2], torch.full((40, 40), (abd0 - 0.3) / 0.125))
    flat = x.reshape(-1, 3, 40, 40)
    torch.testing.assert_close(flat[3], x[1, 1])  # row = slice * W + window


def test_render_slices_resize_is_antialiased_and_matches_pil() -> None:
    """A 1-pixel checkerboard averages to grey when shrunk (no aliasing), as PIL's bilinear resize does."""
    yy, xx = np.mgrid[:128, :128]
    hu = np.where((yy + xx) % 2 == 0, 275, -175).astype(np.int16)[None]
    x = render_slices(hu, [Window("abdomen", -175, 275)], 40, mean=(0, 0, 0), std=(1, 1, 1))
    assert x.shape == (1, 1, 3, 40, 40)
    assert torch.allclose(x, torch.full_like(x, 0.5), atol=5e-3)  # plain bilinear: off by 0.32
    # a smooth image resized like PIL does (antialiased bilinear), interior pixels
    smooth = (np.sin(yy / 9.0) * np.cos(xx / 13.0) * 200).astype(np.int16)
    win = render_slices(smooth[None], [Window("abdomen", -175, 275)], 48, mean=(0,) * 3, std=(1,) * 3)[0, 0, 0]
    scaled = np.clip((smooth.astype(np.float32) + 175) / 450, 0, 1)
    pil = np.asarray(Image.fromarray(scaled, mode="F").resize((48, 48), Image.BILINEAR))
    np.testing.assert_allclose(win.numpy()[4:-4, 4:-4], pil[4:-4, 4:-4], atol=2e-3)


def test_render_slices_chunks_agree_with_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    import clearct.preprocess.render as render

    hu = np.random.default_rng(1).integers(-1024, 2000, size=(7, 24, 24)).astype(np.int16)
    windows = parse_windows("lung,abdomen")
    whole = render_slices(hu, windows, 16, mean=(0.5,) * 3, std=(0.5,) * 3)
    monkeypatch.setattr(render, "_CHUNK_ELEMENTS", 2 * 24 * 24 * 2)  # 2 slices per chunk
    chunked = render_slices(torch.from_numpy(hu), windows, 16, mean=(0.5,) * 3, std=(0.5,) * 3)
    torch.testing.assert_close(chunked, whole)


def _ramp_volume(z_mm: np.ndarray) -> CTVolume:
    hu = np.broadcast_to(np.round(z_mm * 10).astype(np.int16)[:, None, None], (len(z_mm), 4, 4)).copy()
    return CTVolume(hu, (float(np.median(np.diff(z_mm))), 0.8, 0.8), z_mm, scan_id="s", meta={"k": 1})


def test_select_every_kth_slice_keeps_z() -> None:
    vol = _ramp_volume(np.arange(10) * 1.5 - 30)
    out = select_slices(vol, every=3)
    np.testing.assert_array_equal(out.z_mm, vol.z_mm[[0, 3, 6, 9]])
    np.testing.assert_array_equal(out.hu, vol.hu[[0, 3, 6, 9]])
    assert out.spacing_mm == (4.5, 0.8, 0.8)
    assert out.meta["source_slice_index"] == [0, 3, 6, 9] and out.meta["k"] == 1
    assert "source_slice_index" not in vol.meta  # input untouched
    assert select_slices(vol) is vol


def test_select_thickness_averages_slabs() -> None:
    vol = _ramp_volume(np.arange(9) * 1.0)  # HU = 10 × z
    out = select_slices(vol, thickness_mm=2.0)
    np.testing.assert_allclose(out.z_mm, [0, 2, 4, 6, 8])
    assert out.spacing_mm[0] == 2.0
    # interior slab [1, 3] = half of slice 1, slice 2, half of slice 3 → mean z = 2 → 20 HU
    assert out.hu[1, 0, 0] == 20 and out.hu[3, 2, 2] == 60
    # first slab sticks out of the scan: only [−0.5, 1] is covered → (0·1 + 10·0.5) / 1.5 ≈ 3
    assert out.hu[0, 0, 0] == 3


def test_select_thickness_with_uneven_spacing_uses_real_positions() -> None:
    z = np.array([0.0, 1.0, 2.0, 5.0, 6.0])  # a gap between 2 and 5
    out = select_slices(_ramp_volume(z), thickness_mm=1.0)
    np.testing.assert_allclose(out.z_mm, np.arange(7.0))
    # z=3 lies in slice 2's interval [1.5, 3.5]; z=4 in slice 3's [3.5, 5.5]
    assert list(out.hu[:, 0, 0]) == [0, 10, 20, 20, 50, 50, 60]


@pytest.mark.parametrize("kw", [{"every": 0}, {"thickness_mm": -1.0}, {"every": 2, "thickness_mm": 2.0}])
def test_select_rejects_bad_arguments(kw: dict) -> None:
    with pytest.raises(ClearctError):
        select_slices(_ramp_volume(np.arange(4.0)), **kw)

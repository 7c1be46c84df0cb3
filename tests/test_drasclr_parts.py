"""DrasCLR building blocks: masks, patch grid and sampler, conditional convolution, both losses, the queue."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clearct.encoders.drasclr.condconv import CondConv3d
from clearct.encoders.drasclr.mask import region_mask
from clearct.encoders.drasclr.model import TEST_ENCODER, TEST_PATCH, DrasCLREncoder, encoder_from_info
from clearct.encoders.drasclr.patches import (
    PatchSpec,
    nearest_neighbours,
    plan_patches,
    random_affines,
    sample_patches,
)
from clearct.io.volume import CTVolume
from clearct.pretrain.drasclr.losses import LocationQueue, local_contrastive_loss, neighbour_contrastive_loss
from drasclr_phantom import chest_phantom


def test_lung_mask_matches_the_phantom_lungs_and_falls_back_to_body():
    vol = chest_phantom()
    region = region_mask(vol.hu, "lung")
    truth = vol.meta["truth"]
    dice = 2 * (region.mask & truth).sum() / (region.mask.sum() + truth.sum())
    assert region.kind == "lung" and dice > 0.9
    no_lungs = region_mask(chest_phantom(lungs=False).hu, "lung")
    assert no_lungs.kind == "body" and no_lungs.mask.sum() > 0.4 * no_lungs.mask.size
    with pytest.raises(ValueError, match="no body"):
        region_mask(np.full((4, 8, 8), -1000, np.int16))


def test_patch_grid_lies_in_the_mask_with_normalised_locations():
    vol = chest_phantom()
    spec = PatchSpec(patch_size=16, voxel_mm=2.0, grid_mm=10.0)
    scan = plan_patches(vol, spec)
    full_vox = np.rint(scan.centers_vox + scan.origin).astype(int)
    assert vol.meta["truth"][full_vox[:, 0], full_vox[:, 1], full_vox[:, 2]].mean() > 0.95
    # the grid step is the requested mm spacing along each axis
    steps = np.diff(np.unique(np.round(scan.center_mm[:, 2], 3)))
    assert np.allclose(steps % 10.0, 0, atol=1e-3) or np.allclose(steps % 10.0, 10.0, atol=1e-3)
    assert scan.loc.min() >= -1 and scan.loc.max() <= 1 and (scan.loc.max(0) - scan.loc.min(0) > 1.2).all()
    assert (np.diff(scan.slice_index) >= 0).all()
    assert np.allclose(scan.center_mm[:, 0], 100 + 2.5 * (scan.centers_vox[:, 0] + scan.origin[0]))
    nb = nearest_neighbours(scan.center_mm, 3)
    d = np.linalg.norm(scan.center_mm[nb] - scan.center_mm[:, None], axis=-1)
    assert (nb != np.arange(len(scan))[:, None]).all() and np.allclose(d.min(1), 10.0, atol=1e-3)


@pytest.mark.parametrize("affine", [False, True])
def test_sampler_is_exact_on_a_linear_ramp(affine):
    """Trilinear resampling reproduces a linear HU field exactly, also along a rotated, scaled grid."""
    z, y, x = np.meshgrid(np.arange(30), np.arange(40), np.arange(40), indexing="ij")
    hu = (-300 + 4 * z + 3 * y - 2 * x).astype(np.int16)
    vol = CTVolume(hu, (2.0, 1.0, 1.0), np.arange(30) * 2.0)
    spec = PatchSpec(patch_size=8, voxel_mm=1.5, grid_mm=12.0, window=(-1024.0, 240.0), mask="body")
    scan = plan_patches(vol, spec)
    middle = np.array([14.5, 19.5, 19.5])
    idx = np.array([np.argmin(np.abs(scan.centers_vox + scan.origin - middle).sum(1))])  # fully inside
    aff = random_affines(1, torch.Generator().manual_seed(3)) if affine else None
    got = sample_patches(scan, idx, spec, aff)[0, 0]
    t = (torch.arange(8.0) - 3.5) * 1.5
    off = torch.stack(torch.meshgrid(t, t, t, indexing="ij"), -1)
    if aff is not None:
        off = off @ aff[0, :, :3].T + aff[0, :, 3]
    mm = torch.tensor(scan.centers_vox[idx[0]] + scan.origin) * torch.tensor([2.0, 1.0, 1.0]) + off
    vox = mm / torch.tensor([2.0, 1.0, 1.0])
    expect_hu = -300 + 4 * vox[..., 0] + 3 * vox[..., 1] - 2 * vox[..., 2]
    expect = 2 * (expect_hu.clamp(-1024, 240) + 1024) / 1264 - 1
    assert torch.allclose(got, expect.float(), atol=1e-4)


def test_condconv_uses_the_location():
    torch.manual_seed(0)
    conv = CondConv3d(2, 3, 3, stride=2, num_experts=4)
    x = torch.randn(1, 2, 6, 6, 6).repeat(3, 1, 1, 1, 1)  # the same patch three times
    loc = torch.tensor([[0.5, -0.2, 0.1], [0.5, -0.2, 0.1], [-0.9, 0.8, 0.3]])
    y = conv(x, loc)
    assert torch.equal(y[0], y[1])
    assert (y[0] - y[2]).abs().max() > 1e-3
    # grouped batch == per-sample convolution with the location-mixed kernel Σ_k r_k W_k
    for b in range(3):
        r = torch.sigmoid(conv.routing(loc[b]))
        w = (r[:, None, None, None, None, None] * conv.weight).sum(0)
        ref = F.conv3d(x[b : b + 1], w, r @ conv.bias, stride=2, padding=1)
        assert torch.allclose(y[b : b + 1], ref, atol=1e-5)


def test_encoder_embeds_patches_and_rebuilds_from_info():
    enc = DrasCLREncoder(TEST_ENCODER, TEST_PATCH)
    x = torch.randn(3, 1, 16, 16, 16)
    loc = torch.rand(3, 3) * 2 - 1
    enc.eval()
    assert enc(x, loc).shape == (3, TEST_ENCODER.embed_dim)
    again = encoder_from_info(enc.info())
    again.load_state_dict(enc.state_dict())
    assert again.patch == TEST_PATCH and again.spec == TEST_ENCODER
    assert torch.equal(again.eval()(x, loc), enc(x, loc))
    assert enc.instance_kind == "patch3d" and enc.input_size == 16


def test_local_loss_matches_hand_computation():
    tau = 0.5
    q = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # normalised inside: [1,0], [0,1]
    k = torch.tensor([[3.0, 4.0], [0.0, 2.0]], dtype=torch.float64)  # → [.6,.8], [0,1]
    negs = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]]], dtype=torch.float64)
    # row 0 logits [0.6, 0, -1]/τ; row 1 logits [1, 0, -1]/τ
    row0 = math.log(1 + math.exp(-1.2) + math.exp(-3.2))
    row1 = math.log(1 + math.exp(-2.0) + math.exp(-4.0))
    got = local_contrastive_loss(q, k, negs, tau=tau)
    assert got.item() == pytest.approx((row0 + row1) / 2, abs=1e-12)
    # a negatives matrix shared by all rows equals the same rows given per row
    shared = local_contrastive_loss(q, k, negs[0], tau=tau)
    assert shared.item() == pytest.approx(local_contrastive_loss(q, k, negs[0].expand(2, 2, 2), tau=tau).item())


def test_neighbour_loss_matches_hand_computation():
    tau = 0.5
    r = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]], dtype=torch.float64)  # unit neighbours [1,0], [0,1]; sum [1,1]
    k = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    negs = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]], dtype=torch.float64)
    # logits: Σ_j r_j·k = 1.4, Σ_j r_j·n = 1, −1 → /τ = 2.8, 2, −2
    expect = math.log(1 + math.exp(-0.8) + math.exp(-4.8))
    assert neighbour_contrastive_loss(r, k, negs, tau=tau).item() == pytest.approx(expect, abs=1e-12)
    # one neighbour equal to the query gives the local loss
    q = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert neighbour_contrastive_loss(q[:, None], k, negs, tau=tau).item() == pytest.approx(
        local_contrastive_loss(q, k, negs, tau=tau).item(), abs=1e-12
    )


def test_location_queue_bins_and_ring_order():
    queue = LocationQueue(bins_per_axis=2, size=3, dim=2, generator=torch.Generator().manual_seed(0))
    loc = torch.tensor([[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5], [-0.5, 0.5, 1.0], [-1.0, -1.0, -0.1]])
    bins = queue.bin_of(loc)
    assert bins.tolist() == [0, 7, 3, 0]
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    queue.enqueue(keys, bins)
    assert torch.equal(queue.keys[0, :2], keys[[0, 3]]) and queue.ptr[0] == 2
    queue.enqueue(torch.tensor([[3.0, 4.0], [4.0, 3.0]]), torch.tensor([0, 0]))
    assert torch.allclose(queue.keys[0], torch.tensor([[0.8, 0.6], [0.0, -1.0], [0.6, 0.8]]))  # wrapped
    assert queue.ptr[0] == 1
    assert queue.negatives(bins).shape == (4, 3, 2)

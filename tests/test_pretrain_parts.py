"""MoCo v3 heads, momentum update, views and crops, slice cache and index, dataset determinism."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import torch
from torch import nn

from clearct.common.errors import ClearctError
from clearct.io import CTVolume, LesionBox, ScanRecord
from clearct.pretrain.cache import build_cache, build_index, source_key
from clearct.pretrain.data import EpochSampler, PretrainSlices, epoch_order, make_loader
from clearct.pretrain.distributed import GlobalBatchNorm, convert_global_batchnorm
from clearct.pretrain.moco import MoCo, build_mlp
from clearct.pretrain.views import ViewSpec, lesion_crop, make_views, random_resized_crop


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_moco_v3_head_sizes():
    projector = build_mlp(3, 768, 4096, 256, last_bn=True)
    predictor = build_mlp(2, 256, 4096, 256, last_bn=False)
    assert _params(projector) == 20_987_904
    assert _params(predictor) == 2_105_344
    assert not projector[-1].affine and isinstance(projector[-1], nn.BatchNorm1d)
    assert all(m.bias is None for m in [*projector, *predictor] if isinstance(m, nn.Linear))


class TinyTrunk(nn.Module):
    """Conv + BN + pool: enough to exercise BatchNorm and the momentum branch."""

    embed_dim = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten())

    def forward(self, x):
        return self.net(x)


def test_momentum_update_and_key_branch_has_no_grad():
    torch.manual_seed(0)
    model = MoCo(TinyTrunk(), 8, dim=4, mlp_dim=16, tau=0.2)
    with torch.no_grad():
        for p in model.trunk.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.momentum_trunk.parameters()]
    model.update_momentum(0.9)
    for b, p, q in zip(before, model.momentum_trunk.parameters(), model.trunk.parameters()):
        torch.testing.assert_close(p, 0.9 * b + 0.1 * q)
    x = torch.randn(6, 3, 16, 16)
    loss = model(x, x.flip(-1), 1.0)
    loss.backward()
    assert all(p.grad is None for p in model.momentum_trunk.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())


def test_global_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    model = TinyTrunk()
    converted = convert_global_batchnorm(TinyTrunk())
    converted.load_state_dict(model.state_dict())
    assert isinstance(converted.net[1], GlobalBatchNorm)
    x = torch.randn(4, 3, 12, 12)
    torch.testing.assert_close(converted(x), model(x))
    torch.testing.assert_close(converted.net[1].running_var, model.net[1].running_var)


SPEC = ViewSpec(size=32, windows=((-1500.0, 500.0), (-175.0, 275.0)))


def test_random_resized_crop_is_inside_and_in_scale():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop(rng, 100, 80, 0.08)
        assert top >= 0 and top + h <= 100 and left >= 0 and left + w <= 80
        assert h * w >= 0.08 * 8000 * 0.9


def test_lesion_crop_is_centred_on_the_box_and_shifted_inside():
    rng = np.random.default_rng(1)
    crop_min = 0.09
    sides = []
    for _ in range(300):
        top, left, h, w = lesion_crop(rng, 200, 200, (90, 100, 110, 120), crop_min)
        assert h == w and math.sqrt(crop_min) * 200 - 1 <= h <= 200
        assert top >= 0 and top + h <= 200 and left >= 0 and left + w <= 200
        if 100 - h / 2 >= 0 and 110 + h / 2 <= 200:  # not shifted: centred on the box centre (100, 110)
            assert abs(left + w / 2 - 100) <= 1 and abs(top + h / 2 - 110) <= 1
        sides.append(h)
    assert min(sides) < 80 and max(sides) > 180  # the side really ranges over [√crop_min·W, W]
    # near the corner the crop is shifted to stay inside, yet still covers the box
    top, left, h, w = lesion_crop(np.random.default_rng(2), 200, 200, (0, 0, 10, 10), crop_min)
    assert top == 0 and left == 0


def test_lesion_crop_sized_to_the_box():
    rng = np.random.default_rng(3)
    sides = [lesion_crop(rng, 200, 200, (90, 100, 110, 116), 0.08, (2.0, 4.0))[2] for _ in range(300)]
    assert 40 <= min(sides) < 45 and 75 < max(sides) <= 80  # 2–4 × the longer box side (20 px)
    # a tiny box still gets at least an eighth of the image, a huge one at most the image
    assert lesion_crop(rng, 200, 200, (99, 99, 101, 101), 0.08, (2.0, 4.0))[2] == 25
    assert lesion_crop(rng, 200, 200, (0, 0, 180, 180), 0.08, (2.0, 4.0))[2] == 200


def test_views_shape_normalisation_and_determinism():
    hu = (np.arange(64 * 64, dtype=np.int16).reshape(64, 64) % 2000 - 1000).astype(np.int16)
    a1, a2 = make_views(hu, SPEC, np.random.default_rng(5), box=(20, 20, 30, 30))
    b1, b2 = make_views(hu, SPEC, np.random.default_rng(5), box=(20, 20, 30, 30))
    assert a1.shape == a2.shape == (3, 32, 32) and a1.dtype == torch.float32
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    # grey replicated to 3 channels, then normalised per channel
    torch.testing.assert_close(a1[0] * 0.229 + 0.485, a1[1] * 0.224 + 0.456)
    grey = a1[0] * 0.229 + 0.485
    assert grey.min() >= -1e-6 and grey.max() <= 1 + 1e-6
    c1, _ = make_views(hu, SPEC, np.random.default_rng(6))
    assert not torch.equal(a1, c1)


def test_lesion_view_is_the_full_slice():
    # the query view of a lesion slice is the whole slice: an image with a bright left half stays so (or mirrored)
    hu = np.full((64, 64), -1000, np.int16)
    hu[:, :32] = 400
    spec = ViewSpec(size=32, windows=((-175.0, 275.0),), jitter_p=0.0, blur_p=(0.0, 0.0))
    v1, _ = make_views(hu, spec, np.random.default_rng(0), box=(40, 40, 50, 50))
    grey = v1[0] * 0.229 + 0.485
    halves = sorted([grey[:, :16].mean().item(), grey[:, 16:].mean().item()])
    assert halves[0] < 0.05 and halves[1] > 0.95


def _npz_reader(record):
    path = record.path
    data = np.load(path)
    if "hu" not in data:
        raise ClearctError("no 'hu' array", path)
    hu = data["hu"]
    return CTVolume(hu=hu, spacing_mm=(1.0, 1.0, 1.0), z_mm=np.arange(len(hu), dtype=float), scan_id=path.stem,
                    patient_id=path.stem, source=str(path), meta={})


def _cohort(tmp_path, n=3, z=5, size=24):
    records = []
    for i in range(n):
        path = tmp_path / f"s{i}.npz"
        hu = (np.random.default_rng(i).integers(-1000, 1000, (z, size, size))).astype(np.int16)
        np.savez(path, hu=hu)
        records.append(ScanRecord(f"s{i}", f"p{i}", path))
    return records


def test_slice_cache_builds_reuses_and_skips_bad_scans(tmp_path, caplog):
    records = _cohort(tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, other=np.zeros(3))
    records.append(ScanRecord("bad", "pbad", bad))
    cache = build_cache(records, tmp_path / "cache", reader=_npz_reader, progress=False)
    assert [s.scan_id for s in cache.scans] == ["s0", "s1", "s2"] and cache.skipped == ["bad"]
    assert "bad.npz: no 'hu' array" in caplog.text
    np.testing.assert_array_equal(cache.slice(1, 3), np.load(tmp_path / "s1.npz")["hu"][3])
    assert cache.num_slices == 15
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()}

    def refuse(record):
        raise AssertionError(f"{record.path} read again although cached")

    again = build_cache(records[:3], tmp_path / "cache", reader=refuse, progress=False)
    assert [s.array for s in again.scans] == [s.array for s in cache.scans]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()} == mtimes
    # a changed source gets a new key and is re-read
    key = source_key(records[0].path)
    time.sleep(0.01)
    np.savez(records[0].path, hu=np.zeros((2, 24, 24), np.int16))
    os.utime(records[0].path)
    assert source_key(records[0].path) != key
    rebuilt = build_cache(records[:1], tmp_path / "cache", reader=_npz_reader, progress=False)
    assert rebuilt.scans[0].shape == (2, 24, 24)


def test_index_attaches_boxes_and_ignores_unmatched(tmp_path, caplog):
    cache = build_cache(_cohort(tmp_path), tmp_path / "cache", reader=_npz_reader, progress=False)
    lesions = [LesionBox("s1", 2, 5, 6, 30, 10, "a"), LesionBox("s1", 2, 1, 1, 3, 3, "b"),
               LesionBox("s9", 0, 1, 1, 3, 3, "c"), LesionBox("s0", 7, 1, 1, 3, 3, "d")]
    index = build_index(cache, lesions, source="lesions.csv")
    assert len(index) == 15 and index.num_lesion_slices == 1
    row = 5 + 2
    assert index.scan[row] == 1 and index.z[row] == 2
    assert index.boxes[row] == [(5, 6, 24, 10), (1, 1, 3, 3)]  # clipped to the 24-px slice
    assert "2 lesion boxes match no cached scan/slice" in caplog.text


def test_index_targets_follow_lesion_extents(tmp_path):
    cache = build_cache(_cohort(tmp_path), tmp_path / "cache", reader=_npz_reader, progress=False)
    lesions = [LesionBox("s1", 2, 5, 6, 20, 10, "liver", 1, 3), LesionBox("s2", 4, 1, 1, 3, 3, "bone"),
               LesionBox("s2", 0, 1, 1, 3, 3, "liver", 0, 9)]  # an extent past the scan end is cut at it
    index = build_index(cache, lesions)
    assert index.label_names == ("bone", "liver")
    liver, bone = index.targets[:, 1], index.targets[:, 0]
    assert np.flatnonzero(liver).tolist() == [6, 7, 8, 10, 11, 12, 13, 14]  # s1 slices 1–3, all of s2
    assert np.flatnonzero(bone).tolist() == [14]  # no extent: the key slice only
    assert index.annotated.tolist() == [False] * 5 + [True] * 10  # s0 has no rows: no targets for it
    assert index.lesion_rows.tolist() == [7, 10, 14] and index.covered_rows.tolist() == [6, 7, 8, 10, 11, 12, 13, 14]


def test_sampler_draws_the_asked_share_of_annotated_slices():
    rows, emphasis = np.arange(1000), np.arange(0, 1000, 11)  # 91 annotated rows, 9 %
    natural = epoch_order(rows, emphasis, None, seed=0, epoch=0)
    assert sorted(natural.tolist()) == rows.tolist()  # a permutation: every slice once
    order = epoch_order(rows, emphasis, 0.5, seed=0, epoch=0)
    assert len(order) == 1000 and np.isin(order, emphasis).mean() == pytest.approx(0.5, abs=0.002)
    assert len(np.unique(order[~np.isin(order, emphasis)])) == 500  # the other half: distinct other slices
    assert np.array_equal(order, epoch_order(rows, emphasis, 0.5, seed=0, epoch=0))
    assert not np.array_equal(order, epoch_order(rows, emphasis, 0.5, seed=0, epoch=1))
    # sampled batches of the loader show the same share
    sampler = EpochSampler(rows, rank=0, world_size=1, seed=0, emphasis=emphasis, share=0.3)
    drawn = np.array([row for _, _, row in sampler])
    assert np.isin(drawn, emphasis).mean() == pytest.approx(0.3, abs=0.002)


def test_supervised_items_carry_slice_targets(tmp_path):
    cache = build_cache(_cohort(tmp_path), tmp_path / "cache", reader=_npz_reader, progress=False)
    index = build_index(cache, [LesionBox("s1", 2, 5, 6, 20, 10, "liver", 1, 3)])
    dataset = PretrainSlices(cache, index, SPEC, mode="supervised", seed=0)
    x1, x2, targets = dataset[(0, 0, 6)]
    assert targets.tolist() == [1.0] and dataset[(0, 0, 9)][2].tolist() == [0.0]
    assert x1.shape == (3, 32, 32) and x2 is x1  # one view, used once by the loss
    with pytest.raises(ValueError, match="needs lesion targets"):
        PretrainSlices(cache, build_index(cache, []), SPEC, mode="supervised")


def test_dataset_and_loader_are_deterministic_across_workers(tmp_path):
    cache = build_cache(_cohort(tmp_path), tmp_path / "cache", reader=_npz_reader, progress=False)
    index = build_index(cache, [LesionBox("s0", 1, 4, 4, 12, 12, "x")])
    dataset = PretrainSlices(cache, index, SPEC, mode="lecl", seed=3)
    x1, x2, lesion = dataset[(0, 0, 1)]
    assert lesion and x1.shape == (3, 32, 32)
    assert not dataset[(0, 0, 2)][2]
    assert not PretrainSlices(cache, index, SPEC, mode="moco")[(0, 0, 1)][2]
    # the same slice drawn twice in an epoch (oversampling) gets other views
    assert not torch.equal(dataset[(0, 0, 1)][1], dataset[(0, 5, 1)][1])

    def epoch_batches(workers, epoch):
        loader = make_loader(dataset, local_batch=4, workers=workers, seed=3)
        loader.sampler.set_epoch(epoch)
        return list(loader)

    serial, parallel = epoch_batches(0, 1), epoch_batches(2, 1)
    assert len(serial) == 3  # 15 slices, full batches of 4
    for a, b in zip(serial, parallel):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    other = epoch_batches(0, 2)
    assert not torch.equal(serial[0][0], other[0][0])
    # two ranks × 2 see exactly the global batches of one process × 4
    ranks = [make_loader(dataset, local_batch=2, rank=r, world_size=2, seed=3) for r in (0, 1)]
    for loader in ranks:
        loader.sampler.set_epoch(1)
    single = make_loader(dataset, local_batch=4, seed=3)
    single.sampler.set_epoch(1)
    one = [b[0] for b in single]
    two = [torch.cat([a[0], b[0]]) for a, b in zip(*ranks)]
    assert len(one) == len(two)
    for a, b in zip(one, two):
        assert sorted(a.sum((1, 2, 3)).tolist()) == sorted(b.sum((1, 2, 3)).tolist())

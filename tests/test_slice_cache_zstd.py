"""The compressed slice cache: lossless, the same views as the int16 cache, a third of its disk on a real 512² scan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clearct.io import CTVolume, ScanRecord, read_ct, read_scan
from clearct.pretrain.cache import build_cache, build_index, decode_slice, encode_slice
from clearct.pretrain.data import PretrainSlices
from clearct.pretrain.views import ViewSpec

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "realct" / "totalsegmentator" / "example_ct_dicom"


def _volume(record: ScanRecord) -> CTVolume:
    rng = np.random.default_rng(0)
    hu = np.clip(rng.normal(-300, 600, (6, 40, 56)), -1024, 3071).astype(np.int16)
    hu[:, :3] = -1024
    hu[0, 0, :4] = [-32768, 32767, -32768, 0]  # extremes wrap through the difference and back
    return CTVolume(hu=hu, spacing_mm=(2.0, 0.7, 0.7), z_mm=np.arange(6) * 2.0, scan_id=record.scan_id)


def test_frames_are_lossless():
    hu = _volume(ScanRecord("x", "x", Path("x"))).hu
    for plane in hu:
        assert np.array_equal(decode_slice(encode_slice(plane), plane.shape), plane)


def test_views_from_the_compressed_cache_equal_views_from_the_int16_cache(tmp_path):
    records = [ScanRecord(f"s{i}", f"p{i}", tmp_path / f"src{i}") for i in range(2)]
    for r in records:
        r.path.write_text("x")  # the cache key hashes the source file; the reader below makes the volume
    caches = {fmt: build_cache(records, tmp_path / fmt, reader=_volume, progress=False, fmt=fmt)
              for fmt in ("npy", "zstd")}
    assert sorted(p.suffix for p in (tmp_path / "zstd").iterdir()) == [".json", ".json", ".zst", ".zst"]
    spec = ViewSpec(size=32, windows=((-1000.0, 400.0), (-160.0, 240.0)))
    data = {fmt: PretrainSlices(c, build_index(c), spec, mode="moco", seed=3) for fmt, c in caches.items()}
    for row in range(len(data["npy"])):
        a, b = data["npy"][(1, row, row)], data["zstd"][(1, row, row)]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # rebuilding reuses the entries; asking for the other format rewrites them
    again = build_cache(records, tmp_path / "zstd", reader=_volume, progress=False, fmt="zstd")
    assert again.scans == caches["zstd"].scans


@pytest.mark.skipif(not REAL.is_dir(), reason="needs ../shared/realct")
def test_disk_per_slice_of_a_real_512_scan_is_under_a_third_of_int16(tmp_path):
    record = ScanRecord("real", "p", REAL)
    cache = build_cache([record], tmp_path, reader=read_scan, progress=False)
    (entry,) = cache.scans
    depth, height, width = entry.shape
    assert (height, width) == (512, 512)
    per_slice = entry.array.stat().st_size / depth
    assert per_slice <= height * width * 2 / 3  # ≤ 150 GB for DeepLesion's 873,849 slices (int16: 458 GB)
    volume = read_ct(REAL)
    assert all(np.array_equal(cache.slice(0, z), volume.hu[z]) for z in (0, depth // 2, depth - 1))

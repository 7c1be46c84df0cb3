"""--views device: the loader hands slices and drawn decisions, the training loop renders the same views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clearct.io import CTVolume, LesionBox, ScanRecord
from clearct.pretrain.cache import build_cache, build_index
from clearct.pretrain.data import PretrainSlices, make_loader
from clearct.pretrain.views import ViewSpec, render_batch


def _volume(record):
    rng = np.random.default_rng(len(record.scan_id))
    size = 48 if record.scan_id.endswith("0") else 40  # two slice sizes: the batch is padded
    hu = np.clip(rng.normal(-300, 500, (5, size, size + 8)), -1024, 3071).astype(np.int16)
    return CTVolume(hu=hu, spacing_mm=(2.0, 0.8, 0.8), z_mm=np.arange(5) * 2.0, scan_id=record.scan_id)


@pytest.mark.parametrize("mode", ["moco", "lecl", "supervised"])
def test_device_views_equal_loader_views(tmp_path, mode):
    records = [ScanRecord(f"s{i}", f"p{i}", tmp_path / f"src{i}") for i in range(2)]
    for r in records:
        r.path.write_text("x")
    cache = build_cache(records, tmp_path / "cache", reader=_volume, progress=False)
    lesions = [LesionBox("s0", 2, 10.0, 12.0, 30.0, 28.0, "lung"), LesionBox("s1", 1, 5.0, 5.0, 20.0, 25.0, "liver")]
    index = build_index(cache, lesions)
    spec = ViewSpec(size=24, windows=((-1000.0, 400.0), (-160.0, 240.0)), solarize_p=(0.5, 0.5))
    loader_side = PretrainSlices(cache, index, spec, mode=mode, seed=5)
    device_side = PretrainSlices(cache, index, spec, mode=mode, seed=5, device_views=True)
    batches = [make_loader(d, local_batch=len(index), workers=0) for d in (loader_side, device_side)]
    for b in batches:
        b.sampler.set_epoch(2)
    (x1, x2, extra), (hu, params, extra_dev) = (next(iter(b)) for b in batches)
    assert hu.dtype == torch.int16 and hu.shape == (len(index), 48, 56)  # padded to the largest slice
    assert torch.equal(render_batch(hu, params[:, 0], spec), x1)
    assert torch.equal(render_batch(hu, params[:, 1], spec), x2)
    assert torch.equal(torch.as_tensor(extra), torch.as_tensor(extra_dev))

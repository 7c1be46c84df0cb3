"""A phantom rendered in z-slabs is the phantom rendered whole, bit for bit; the slab fields match scipy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from clearct.config import SynthFindings
from clearct.synth.fields import SlabField
from clearct.synth.noise import acquisition
from clearct.synth.phantom import make_phantom


def _render(index: int, slab_voxels: int, *, size: int = 48, slices: int = 30, external: bool = False):
    knobs = SynthFindings(location_prevalence=1.0, lung_prevalence=1.0)
    acq = acquisition("external" if external else "standard")
    return make_phantom(np.random.SeedSequence(3, spawn_key=(index,)), patient_id="p", scan_id="s", size=size,
                        slices=slices, chest_share=0.5, knobs=knobs, acq=acq, slab_voxels=slab_voxels)


@pytest.mark.parametrize(("index", "external"), [(0, False), (1, True), (4, False)])
def test_slabs_give_the_whole_volume(index, external):
    whole = _render(index, 1 << 30, external=external)
    for depth in (1, 4):
        part = _render(index, depth * 48 * 48, external=external)
        assert np.array_equal(part.volume.hu, whole.volume.hu), depth
        assert np.array_equal(part.organ, whole.organ), depth
        assert part.findings == whole.findings
    assert whole.findings.lung["fibrosis"] or whole.findings.lung["emphysema"]  # the slab-wise findings ran


@pytest.mark.parametrize(("shape", "sigmas", "mode", "slab"), [
    ((37, 20, 24), (2.3, 1.5, 0.7), "nearest", 5), ((12, 16, 16), (7.0, 3.0, 3.0), "nearest", 4),
    ((9, 8, 8), (0.0, 2.0, 2.0), "reflect", 2)])
def test_slab_field_equals_scipy_on_the_whole_volume(shape, sigmas, mode, slab):
    whole = gaussian_filter(np.random.default_rng(3).standard_normal(shape).astype(np.float32), sigmas, mode=mode)
    rng = np.random.default_rng(3)
    field = SlabField(rng, shape, sigmas, mode=mode, slab=slab)
    got = np.concatenate([field.rows(k, min(k + slab, shape[0])) for k in range(0, shape[0], slab)])
    assert np.array_equal(got, whole)
    assert field.std == pytest.approx(float(whole.std()), rel=1e-5)
    # the generator stands where the whole-volume draw leaves it
    after = np.random.default_rng(3)
    after.standard_normal(shape)
    assert rng.random() == after.random()

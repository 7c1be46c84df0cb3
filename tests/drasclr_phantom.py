"""A small chest phantom for the DrasCLR tests (a CTVolume built in memory)."""

from __future__ import annotations

import numpy as np

from clearct.io.volume import CTVolume


def chest_phantom(z: int = 40, n: int = 64, seed: int = 0, lungs: bool = True) -> CTVolume:
    """Air around an elliptic body (40 HU) holding two lung ellipsoids (−850 HU) with denser blobs."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, s) for s in (z, n, n)), indexing="ij")
    hu = np.full((z, n, n), -1000.0)
    hu[(yy / 0.7) ** 2 + (xx / 0.9) ** 2 < 1] = 40
    truth = np.zeros(hu.shape, dtype=bool)
    if lungs:
        for cx in (-0.4, 0.4):
            truth |= (yy / 0.5) ** 2 + ((xx - cx) / 0.3) ** 2 + (zz / 0.9) ** 2 < 1
        hu[truth] = -850
        for _ in range(6):
            c, r = rng.uniform(-0.6, 0.6, 3), rng.uniform(0.08, 0.2)
            blob = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 < r * r
            hu[blob & truth] = rng.uniform(-300, 0)
    hu += rng.normal(0, 20, hu.shape)
    vol = CTVolume(hu.astype(np.int16), (2.5, 1.5, 1.5), 100 + 2.5 * np.arange(z), scan_id=f"s{seed}",
                   patient_id=f"p{seed}")
    vol.meta["truth"] = truth
    return vol

"""Test helper: a heatmap file ``heatmaps/<scan_id>.h5`` as ``predict``/``attention`` write it (the contract in
clearct.io.heatmaps), with a hot square at a known place so overlays can be checked where they land."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clearct.io.heatmaps import ScanHeatmaps, write_heatmaps


def hot_square_maps(slices: Sequence[int], shape: tuple[int, int], box: tuple[int, int, int, int],
                    targets: int = 2) -> np.ndarray:
    """(K, T, H, W) float16: 1.0 inside ``box`` (row0, row1, col0, col1) for target 0, a weaker and shifted
    square for the other targets, 0 elsewhere; the value grows with the instance so slices differ."""
    r0, r1, c0, c1 = box
    maps = np.zeros((len(slices), targets, *shape), np.float32)
    for k in range(len(slices)):
        maps[k, 0, r0:r1, c0:c1] = 0.5 + 0.5 * (k + 1) / len(slices)
        for t in range(1, targets):
            maps[k, t, r0 + 8 * t:r1 + 8 * t, c0:c1] = 0.4
    return maps.astype(np.float16)


def write_heatmap_file(path: Path, *, scan_id: str, maps: np.ndarray, slice_index: Sequence[int],
                       window: Sequence[int], attention: Sequence[float], targets: Sequence[str],
                       windows: Sequence[Sequence], encoder: str = "vit_conv_test", weights_sha256: str = "random-init",
                       layer: str = "blocks.1") -> Path:
    """The file through the project's writer, maps as given (scale 1)."""
    return write_heatmaps(path, ScanHeatmaps(
        maps=np.asarray(maps, np.float16), slice_index=np.asarray(slice_index), window=np.asarray(window),
        attention=np.asarray(attention, np.float32), targets=list(targets),
        windows=[(str(n), float(lo), float(hi)) for n, lo, hi in windows], method="gradcam", layer=layer,
        encoder=encoder, weights_sha256=weights_sha256, scan_id=scan_id, scale=[1.0] * len(targets)))

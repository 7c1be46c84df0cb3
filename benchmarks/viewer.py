"""viewer.html size and build time for a synthetic 300 × 512² scan in two windows (lung, abdomen).

Usage: python benchmarks/viewer.py [--slices 300] [--size 512] [--formats webp,jpeg] [--quality 80]

The scan is one phantom patient of ``clearct synth`` (anatomy, findings and scanner noise, so the images compress
like CT rather than like flat test patterns) with an attention profile over every instance and Grad-CAM-like
heatmaps on the 12 most attended slices for two targets, which is what ``clearct predict`` hands the viewer.
Prints the file size (MB), the time to build it and the time to render the phantom (not part of the viewer).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from clearct.config import SynthSettings
from clearct.io.heatmaps import Heatmaps
from clearct.report.viewer import AttentionProfile, Prediction, ViewerScan, write_viewer
from clearct.synth.cohort import render_patient

WINDOWS = [("lung", -1500.0, 500.0), ("abdomen", -175.0, 275.0)]


def synthetic_inputs(slices: int, size: int) -> ViewerScan:
    vol = render_patient(0, 0, SynthSettings(size=size, slices=slices)).volume
    rng = np.random.default_rng(0)
    z = np.arange(slices)
    profile = np.exp(-0.5 * ((z - 0.6 * slices) / (0.05 * slices)) ** 2) + 0.05 * rng.random(slices)
    attn = np.concatenate([profile, 0.5 * profile])
    attn /= attn.sum()
    top = np.argsort(-profile)[:12]
    yy, xx = np.mgrid[:size, :size] / size
    blob = np.exp(-((yy - 0.4) ** 2 + (xx - 0.6) ** 2) / 0.01)
    maps = np.stack([np.stack([blob * (1 + 0.1 * t), blob[::-1]]) for t in range(len(top))]).astype(np.float16)
    heat = Heatmaps(maps=maps, slice_index=top, window=np.zeros(len(top), np.int64),
                    attention=attn[top].astype(np.float32), targets=["nodule", "effusion"], windows=WINDOWS[:1],
                    method="gradcam", layer="blocks.11", encoder="benchmark", weights_sha256="0" * 64,
                    scan_id=vol.scan_id)
    return ViewerScan(scan_id=vol.scan_id, hu=vol.hu, z_mm=vol.z_mm, spacing_mm=vol.spacing_mm, windows=WINDOWS,
                      attention=AttentionProfile(np.concatenate([z, z]), np.repeat([0, 1], slices), attn,
                                                 ["lung", "abdomen"]),
                      heatmaps=heat, predictions=[Prediction("nodule", 0.8, 0.5, True),
                                                  Prediction("effusion", 0.2, 0.4, False)],
                      identity={"model folder": "benchmark", "clearct version": "benchmark"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--formats", default="webp,jpeg", help="image formats to measure, comma separated")
    ap.add_argument("--quality", type=int, default=80)
    args = ap.parse_args()
    t0 = time.perf_counter()
    scan = synthetic_inputs(args.slices, args.size)
    t1 = time.perf_counter()
    print(f"phantom {args.slices} × {args.size}² rendered in {t1 - t0:.1f} s (not part of the viewer)")
    for fmt in args.formats.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            t1 = time.perf_counter()
            path = write_viewer(Path(tmp) / "viewer.html", scan, fmt=fmt, quality=args.quality)
            t2 = time.perf_counter()
            size = path.stat().st_size
        print(f"{fmt} q{args.quality}, 2 windows: viewer.html {size / 1e6:.2f} MB ({size / 2 ** 20:.2f} MiB), built in "
              f"{t2 - t1:.1f} s ({(t2 - t1) / (2 * args.slices) * 1e3:.1f} ms per slice image)")


if __name__ == "__main__":
    main()

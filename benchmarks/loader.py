"""Pretraining loader per core: disk per 1,000 slices and two-view slices/s for each source kind, with and without
the slice cache.

Usage: python benchmarks/loader.py [--slices 20] [--size 224] [--samples 60] [--source DICOM_FOLDER]

The content is one real 512² CT series (default ``../shared/realct/totalsegmentator/example_ct_dicom``, JPEG 2000
lossless, 20 slices), written again as an uncompressed DICOM series, a DeepLesion PNG folder, a NIfTI file and an
``.npz``. One process with one torch thread (one loader worker's core) draws random slices and makes the two 224 px
views of a MoCo pair (``PretrainSlices``'s work) from:

- no cache, whole scan: ``read_ct`` of the source for every sample (what a loader without a cache pays);
- no cache, one file: one slice file decoded (pydicom / PIL) — the "no copy" option for one-file-per-slice sources
  (orientation and slice order taken as known);
- the cache: ``--cache-format zstd`` and ``npy`` (``SliceCache.slice``);
- views alone: the slice already in memory (the ceiling of any storage);
- ``--views device``: the worker's part (read from the zstd cache + draw the decisions) and, separately, the
  batch rendering (``render_batch``, batch 64) measured here on the CPU, where a GPU would run it.

From the best per-core rate it prints the loader cores one GPU needs for 750 two-view slices/s (MambaOut-T at 224 px
on an H100-class GPU, the paper's rate).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

TARGET = 750.0  # two-view slices per second per GPU


def _rate(fn, samples: int) -> float:
    fn(0)  # warm-up (imports, first open)
    start = time.perf_counter()
    for i in range(samples):
        fn(i + 1)
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parents[1] / ".." / "shared" / "realct" / "totalsegmentator" / "example_ct_dicom"
    parser.add_argument("--source", type=Path, default=default)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import pydicom
    from PIL import Image

    from clearct.io import ScanRecord, read_ct, read_scan
    from clearct.preprocess import parse_windows
    from clearct.pretrain.cache import build_cache
    from clearct.pretrain.views import ViewSpec, draw_views, make_views, render_batch
    from clearct.synth.writers import write_dicom, write_nifti, write_png

    volume = read_ct(args.source)
    depth = volume.hu.shape[0]
    spec = ViewSpec(size=args.size, windows=tuple((w.lo, w.hi) for w in parse_windows("lung,abdomen")))
    print(f"content: {args.source} {volume.hu.shape}, {args.size} px views, 1 torch thread, "
          f"load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = {"DICOM JPEG 2000": args.source}
        (root / "dicom").mkdir()
        write_dicom(volume, root / "dicom", "loader-bench")
        sources["DICOM uncompressed"] = root / "dicom"
        (root / "png").mkdir()
        write_png(volume, root / "png", "")
        sources["DeepLesion PNG"] = root / "png"
        write_nifti(volume, root / "scan.nii.gz")
        sources["NIfTI (.nii.gz)"] = root / "scan.nii.gz"
        np.savez_compressed(root / "scan.npz", hu=volume.hu, spacing=np.asarray(volume.spacing_mm))
        sources["npz (compressed)"] = root / "scan.npz"
        files = {"DICOM JPEG 2000": sorted(p for p in args.source.iterdir() if p.is_file()),
                 "DICOM uncompressed": sorted((root / "dicom").iterdir()),
                 "DeepLesion PNG": sorted((root / "png").iterdir())}
        rows = []
        for kind, path in sources.items():
            disk = sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size

            def whole(i: int, path: Path = path) -> None:
                rng = np.random.default_rng(i)
                hu = read_ct(path, spacing=volume.spacing_mm[0]).hu
                make_views(hu[int(rng.integers(len(hu)))], spec, rng)

            rows.append((kind, "no cache, whole scan per sample", disk / depth * 1000, _rate(whole, max(4, args.samples // 10))))
            if kind in files:
                def one_file(i: int, kind: str = kind) -> None:
                    rng = np.random.default_rng(i)
                    f = files[kind][int(rng.integers(len(files[kind])))]
                    if kind == "DeepLesion PNG":
                        hu = np.asarray(Image.open(f), np.int32) - 32768
                    else:
                        ds = pydicom.dcmread(f)
                        hu = ds.pixel_array.astype(np.int32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                    make_views(hu.astype(np.int16), spec, rng)

                rows.append((kind, "no cache, one slice file per sample", disk / depth * 1000, _rate(one_file, args.samples)))
        for fmt in ("zstd", "npy"):
            record = ScanRecord("bench", "p", args.source)
            cache = build_cache([record], root / f"cache-{fmt}", reader=read_scan, progress=False, fmt=fmt)
            disk = cache.scans[0].array.stat().st_size

            def cached(i: int, cache=cache) -> None:
                rng = np.random.default_rng(i)
                make_views(cache.slice(0, int(rng.integers(depth))), spec, rng)

            rows.append(("any source", f"slice cache ({fmt})", disk / depth * 1000, _rate(cached, args.samples)))
            if fmt == "zstd":
                def worker_part(i: int, cache=cache) -> None:
                    rng = np.random.default_rng(i)
                    plane = cache.slice(0, int(rng.integers(depth)))
                    draw_views(plane.shape[0], plane.shape[1], spec, rng)

                rows.append(("any source", "zstd cache, --views device: worker part", disk / depth * 1000,
                             _rate(worker_part, args.samples)))
                batch = 64
                hu = torch.from_numpy(np.stack([volume.hu[i % depth] for i in range(batch)]))
                params = torch.stack([torch.stack([p.packed() for p in draw_views(512, 512, spec,
                                                                                   np.random.default_rng(i))])
                                      for i in range(batch)])

                def render(i: int, hu: torch.Tensor = hu, params: torch.Tensor = params) -> None:
                    render_batch(hu, params[:, 0], spec)
                    render_batch(hu, params[:, 1], spec)

                rows.append(("any source", "--views device: render_batch on this CPU (batch 64)", 0.0,
                             batch * _rate(render, 2) ))

        def views(i: int) -> None:
            rng = np.random.default_rng(i)
            make_views(volume.hu[int(rng.integers(depth))], spec, rng)

        rows.append(("in memory", "views alone", 0.0, _rate(views, args.samples)))
    print(f"| source | path | disk per 1,000 slices (MB) | two-view slices/s per core | cores for {TARGET:.0f}/s |")
    print("|---|---|---|---|---|")
    for kind, how, disk, rate in rows:
        print(f"| {kind} | {how} | {disk / 1e6:.0f} | {rate:.1f} | {TARGET / rate:.1f} |")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Read + window + resize speed: clearct vs a plain per-file pydicom + PIL loop (slices/s).

Usage: python benchmarks/read.py [--slices 100] [--size 512] [--out-size 224] [--repeats 2] [--syntax raw|j2k]
Writes a synthetic 512×512 CT series (random shuffled file names, int16, ExplicitVRLittleEndian or JPEG 2000
lossless) into a temporary folder, then times, for the whole series: reading and ordering the slices, HU rescale,
two windows (lung, abdomen), antialiased resize to 224 and ImageNet normalisation into (Z·2, 3, 224, 224).
Best of ``--repeats`` runs for each side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image
from pydicom.uid import JPEG2000Lossless

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from clearct.io import read_ct  # noqa: E402
from clearct.preprocess import parse_windows, render_slices  # noqa: E402
from ct_dicom import write_slice  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_benchmark_series(folder: Path, slices: int, size: int, syntax: str) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.45 * size) ** 2
    names = rng.permutation(slices)
    for k in range(slices):
        stored = np.where(body, 1024 + 40 + rng.normal(0, 30, (size, size)), 0).astype(np.int16)
        path = write_slice(folder / f"IM{names[k]:05d}", stored, position=(-250, -250, 2.0 * k), instance=k + 1)
        if syntax == "j2k":
            ds = pydicom.dcmread(path)
            ds.compress(JPEG2000Lossless)
            ds.save_as(path)


def clearct_pipeline(folder: Path, out_size: int) -> tuple[torch.Tensor, float, float]:
    t0 = time.perf_counter()
    vol = read_ct(folder)
    t1 = time.perf_counter()
    x = render_slices(vol.hu, parse_windows("lung,abdomen"), out_size, mean=MEAN, std=STD)
    return x.reshape(-1, 3, out_size, out_size), t1 - t0, time.perf_counter() - t1


def plain_pipeline(folder: Path, out_size: int) -> torch.Tensor:
    """What a script without clearct does: one file at a time, numpy windowing, PIL resize per window."""
    windows = [(-1500.0, 500.0), (-175.0, 275.0)]
    mean, std = np.array(MEAN, np.float32)[:, None, None], np.array(STD, np.float32)[:, None, None]
    slices = []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        rows = []
        for lo, hi in windows:
            grey = np.clip((hu - lo) / (hi - lo), 0, 1)
            small = np.asarray(Image.fromarray(grey, mode="F").resize((out_size, out_size), Image.BILINEAR))
            rows.append((np.repeat(small[None], 3, axis=0) - mean) / std)
        slices.append((float(ds.ImagePositionPatient[2]), rows))
    slices.sort(key=lambda s: s[0])
    return torch.from_numpy(np.stack([r for _, rows in slices for r in rows]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--syntax", choices=["raw", "j2k"], default="raw")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.slices} slices "
          f"{args.size}×{args.size} ({args.syntax}) → 2 windows × {args.out_size}²")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_benchmark_series(folder, args.slices, args.size, args.syntax)
        best_c, best_p, parts = np.inf, np.inf, (0.0, 0.0)
        for _ in range(args.repeats):
            t = time.perf_counter()
            ours, read_s, render_s = clearct_pipeline(folder, args.out_size)
            if time.perf_counter() - t < best_c:
                best_c, parts = time.perf_counter() - t, (read_s, render_s)
            t = time.perf_counter()
            plain = plain_pipeline(folder, args.out_size)
            best_p = min(best_p, time.perf_counter() - t)
        diff = float((ours - plain).abs().max())
    n = args.slices
    print(f"clearct  : {n / best_c:7.1f} slices/s ({best_c:.2f} s: read {parts[0]:.2f} s, render {parts[1]:.2f} s)")
    print(f"plain    : {n / best_p:7.1f} slices/s ({best_p:.2f} s)")
    print(f"ratio    : {best_p / best_c:7.2f}× (clearct / plain); max |difference| of the tensors {diff:.3f}")


if __name__ == "__main__":
    main()

"""Extraction speed: (a) ``clearct extract`` end to end, (b) the authors' one-slice-per-forward loop, (c) the
encoder forward alone on ready tensors, with (c)'s FLOP/s against a dense-matmul peak measured here.

Usage: python benchmarks/extract.py [--encoders mambaout_tiny,vit_conv_base] [--slices 48] [--scans 2]
       [--size 512] [--batch-size 16] [--device auto] [--repeats 2] [--compete 1]
The benchmark writes a DICOM series (one window, abdomen, so rows = slices) and uses random weights.
``--compete N`` runs N other processes during the measurement, each a frozen mambaout_tiny forward loop with 2
torch threads (a second extract on the same machine), to measure under load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from clearct.common.device import resolve_device, reuse_freed_memory
from clearct.config import ExtractConfig
from clearct.encoders import create_encoder
from clearct.encoders.embed import forward_rows
from clearct.extract.run import run_extract
from clearct.io import CTVolume, read_ct
from clearct.preprocess import parse_windows, render_slices
from clearct.synth.writers import write_dicom


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    """Dense float32 matmul FLOP/s: the machine's practical ceiling for the forward pass."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def write_cohort(root: Path, scans: int, slices: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    lines = ["scan_id,patient_id,path"]
    for i in range(scans):
        hu = rng.normal(-300, 400, size=(slices, size, size)).clip(-1024, 2000).astype(np.int16)
        vol = CTVolume(hu=hu, spacing_mm=(2.5, 0.7, 0.7), z_mm=np.arange(slices) * 2.5, scan_id=f"b{i}")
        (root / f"b{i}").mkdir()
        write_dicom(vol, root / f"b{i}", uid_key=f"bench{i}")
        lines.append(f"b{i},p{i},b{i}")
    (root / "scans.csv").write_text("\n".join(lines) + "\n")
    return root / "scans.csv"


def _seconds(fn, device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def end_to_end(
    name: str, weights: Path, scans_csv: Path, root: Path, args: argparse.Namespace, device: torch.device
) -> None:
    """(a) ``clearct extract`` as a user runs it: encoder load, read-ahead of the next scan, batched forward, h5."""
    cfg = ExtractConfig(
        scans=scans_csv,
        encoder=name,
        weights=weights,
        windows=["abdomen"],
        out=root / f"out-{name}",
        batch_size=args.batch_size,
        device=str(device),
        workers=1,
        overwrite=True,
    )
    for old in cfg.out.glob("*.h5"):  # a resumed run would skip them
        old.unlink()
    run_extract(cfg)


def one_slice_loop(
    encoder: torch.nn.Module, windows: list, root: Path, args: argparse.Namespace, device: torch.device
) -> None:
    """(b) the authors' approach: read each scan, then one slice per forward pass (batch size 1)."""
    for i in range(args.scans):
        vol = read_ct(root / f"b{i}")
        for s in range(vol.hu.shape[0]):
            x = render_slices(
                vol.hu[s : s + 1], windows, encoder.input_size, mean=encoder.mean, std=encoder.std
            )
            forward_rows(encoder, x[:, 0], device)


def forward_only(
    encoder: torch.nn.Module, x: torch.Tensor, n_rows: int, args: argparse.Namespace, device: torch.device
) -> None:
    """(c) the forward alone on ready tensors, the same rows in the same batches."""
    for _ in range(0, n_rows, args.batch_size):
        forward_rows(encoder, x, device)


def bench(
    name: str, scans_csv: Path, root: Path, args: argparse.Namespace, device: torch.device, peak: float
) -> None:
    windows = parse_windows("abdomen")
    encoder = create_encoder(name).to(device).eval()
    weights = root / f"{name}.pt"
    torch.save(encoder.state_dict(), weights)
    n_rows = args.scans * args.slices
    x = torch.randn(args.batch_size, 3, encoder.input_size, encoder.input_size)
    forward_rows(encoder, x, device)  # warm-up: first-call allocations and kernel choices count in no figure
    with FlopCounterMode(display=False) as counter:
        forward_rows(encoder, x[:1], device)
    flops_per_row = counter.get_total_flops()
    # Rounds interleave (a), (b), (c) and each keeps its best round: on a shared machine other jobs' load comes
    # and goes, and the best of interleaved rounds compares the three under the most similar conditions.
    a = b = c = 0.0
    for _ in range(args.repeats):
        a = max(
            a, n_rows / _seconds(lambda: end_to_end(name, weights, scans_csv, root, args, device), device)
        )
        b = max(b, n_rows / _seconds(lambda: one_slice_loop(encoder, windows, root, args, device), device))
        c_rows = len(range(0, n_rows, args.batch_size)) * args.batch_size
        c = max(c, c_rows / _seconds(lambda: forward_only(encoder, x, n_rows, args, device), device))
    print(
        f"{name}: (a) {a:.2f} slices/s  (b) {b:.2f}  (c) {c:.2f}  (a)/(b) {a / b:.2f}  (a)/(c) {a / c:.2f}  "
        f"(c) {c * flops_per_row / 1e9:.1f} GFLOP/s = {100 * c * flops_per_row / peak:.0f}% of matmul peak "
        f"({flops_per_row / 1e9:.2f} GFLOP per slice)"
    )


COMPETITOR = """
import torch
from clearct.encoders import create_encoder
torch.set_num_threads(2)
model = create_encoder("mambaout_tiny").eval()
x = torch.randn(16, 3, 224, 224)
with torch.inference_mode():
    while True:
        model(x)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", default="mambaout_tiny,vit_conv_base")
    parser.add_argument("--slices", type=int, default=48)
    parser.add_argument("--scans", type=int, default=2)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--compete", type=int, default=0, help="competing forward-loop processes (load)")
    args = parser.parse_args()
    print(f"malloc tuning {reuse_freed_memory()} (as the clearct command; CLEARCT_MALLOC_TUNING=0: off)")
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scans_csv = write_cohort(root, args.scans, args.slices, args.size)
        others = [subprocess.Popen([sys.executable, "-c", COMPETITOR]) for _ in range(args.compete)]
        try:
            if others:
                time.sleep(20)  # the competitors are past their start-up
            peak = matmul_peak(device)
            print(f"device {device}, torch threads {torch.get_num_threads()}, {args.compete} competing processes, "
                  f"load {os.getloadavg()[0]:.2f}, matmul peak {peak / 1e9:.1f} GFLOP/s")
            for name in args.encoders.split(","):
                bench(name, scans_csv, root, args, device, peak)
            print(f"load at the end {os.getloadavg()[0]:.2f}")
        finally:
            for p in others:
                p.kill()


if __name__ == "__main__":
    main()

"""VMamba's speed on CPU against MambaOut (similar FLOPs): inference forward, and the pretraining step over the
two-view forward (targets: forward ≤ 2.5× mambaout_tiny's, step / two-view forward ≤ 5×).

    .venv/bin/python benchmarks/vmamba.py                 # 2 × 224² inference, batch 8 steps
    .venv/bin/python benchmarks/vmamba.py --profile       # + the top ops of vmamba_tiny's forward
    .venv/bin/python benchmarks/vmamba.py --blocks --step-repeats 0   # + one SS2D block at stage 1 and stage 3

Timings are medians of ``--repeats`` after a warm-up, all in one process so the ratios share the machine's load
(the two forwards interleaved).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from clearct.common.device import reuse_freed_memory
from clearct.encoders import create_encoder


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_times(archs: tuple[str, ...], *, batch: int, size: int, repeats: int) -> dict[str, float]:
    """Median inference forward of each architecture, the repeats interleaved (A B A B …) so that a change in the
    machine's load reaches every architecture alike."""
    x = torch.randn(batch, 3, size, size)
    models = {}
    for arch in archs:
        torch.manual_seed(0)
        models[arch] = create_encoder(arch).eval()
    times = {arch: [] for arch in archs}
    with torch.inference_mode():
        for model in models.values():  # warm-up
            model(x)
        for _ in range(repeats):
            for arch, model in models.items():
                start = time.perf_counter()
                model(x)
                times[arch].append(time.perf_counter() - start)
    return {arch: statistics.median(t) for arch, t in times.items()}


def block_times(dim: int, side: int, repeats: int) -> tuple[float, float]:
    """One SS2D block of vmamba_tiny (batch 2, ``side``² map of ``dim`` channels): inference, forward + backward."""
    from clearct.encoders.vmamba.model import SS2D

    torch.manual_seed(0)
    op = SS2D(dim)
    x = torch.randn(2, side, side, dim)
    with torch.inference_mode():
        inference = median_time(lambda: op(x), repeats)
    x.requires_grad_(True)
    return inference, median_time(lambda: op(x).sum().backward(), repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--step-batch", type=int, default=8)
    ap.add_argument("--step-repeats", type=int, default=2, help="0: forward only")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--blocks", action="store_true", help="also time one SS2D block per stage shape")
    args = ap.parse_args()
    tuned = reuse_freed_memory()  # as the clearct command does (CLEARCT_MALLOC_TUNING=0: off)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, malloc tuning {tuned}, "
          f"load {os.getloadavg()[0]:.2f}")
    fwd = forward_times(("mambaout_tiny", "vmamba_tiny"), batch=args.batch, size=args.size, repeats=args.repeats)
    print(f"forward {args.batch} × {args.size}²: mambaout_tiny {fwd['mambaout_tiny']:.3f} s, vmamba_tiny "
          f"{fwd['vmamba_tiny']:.3f} s → {fwd['vmamba_tiny'] / fwd['mambaout_tiny']:.2f}×")
    from pretrain_step import bench_step  # benchmarks/ is the script's folder

    for arch in ("mambaout_tiny", "vmamba_tiny") if args.step_repeats else ():
        r = bench_step(arch, batch=args.step_batch, size=args.size, device=torch.device("cpu"),
                       repeats=args.step_repeats)
        print(f"pretrain step {arch}, batch {args.step_batch}: {r['step_s']:.2f} s, step / two-view forward "
              f"{r['ratio']:.2f}")
    for dim, side in ((96, 56), (384, 14)) if args.blocks else ():  # the shapes of stages 1 and 3
        inference, train = block_times(dim, side, args.repeats)
        print(f"SS2D {dim} ch, 2 × {side}²: inference {inference * 1e3:.1f} ms, forward + backward {train * 1e3:.1f} ms")
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        model = create_encoder("vmamba_tiny").eval()
        x = torch.randn(args.batch, 3, args.size, args.size)
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()

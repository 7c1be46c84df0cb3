"""Pretraining speed: images/s of one MoCo v3 / LECL training step per architecture, the step / two-view-forward
time ratio, and the data loader's slices/s over the slice cache (all at 224 px by default).

    .venv/bin/python benchmarks/pretrain_step.py                       # CPU, batch 8
    .venv/bin/python benchmarks/pretrain_step.py --device cuda --batch 128   # GPU, bf16 autocast

The step is the real ``train_step`` (two views through the query and momentum branches, LECL loss, backward,
AdamW) with the paper's heads (4096-wide MLPs). The loader reads a synthetic 512 px cohort through the slice
cache with ``--workers`` processes (views: crop, window jitter, blur, solarize, normalise).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from clearct.common.device import autocast_for, resolve_device
from clearct.encoders import create_encoder
from clearct.pretrain.train import LossSpec, build_moco, train_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_step(arch: str, *, batch: int, size: int, device: torch.device, repeats: int) -> dict:
    torch.manual_seed(0)
    encoder = create_encoder(arch)
    model = build_moco(encoder, dim=256, mlp_dim=4096, tau=0.2, distributed=False).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], weight_decay=0.1)
    x1, x2 = (torch.randn(batch, 3, size, size, device=device) for _ in range(2))
    lesion = torch.arange(batch, device=device) % 4 == 0
    spec = LossSpec(lam=1.0)

    def step():
        train_step(model, optimizer, x1, x2, lesion, lr=1e-4, m=0.99, loss_spec=spec, device=device)

    def forward():
        with torch.no_grad(), autocast_for(device):
            model.predictor(model.projector(model.trunk(x1)))
            model.predictor(model.projector(model.trunk(x2)))

    t_step = _timed(step, device, repeats)
    t_fwd = _timed(forward, device, repeats)
    trunk_params = sum(p.numel() for p in model.trunk.parameters())
    return {"arch": arch, "params_M": trunk_params / 1e6, "batch": batch, "step_s": t_step,
            "images_s": batch / t_step, "ratio": t_step / t_fwd}


def bench_loader(*, size: int, workers: int, batch: int, scans: int, slices: int) -> float:
    from clearct.io import read_lesions_table, read_scans_table
    from clearct.preprocess import parse_windows
    from clearct.pretrain.cache import build_cache, build_index
    from clearct.pretrain.data import PretrainSlices, make_loader
    from clearct.pretrain.views import ViewSpec
    from clearct.synth import generate_cohort

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_cohort(tmp / "cohort", patients=scans, size=512, slices=slices, format="nifti", progress=False)
        cache = build_cache(read_scans_table(tmp / "cohort" / "scans.csv"), tmp / "cache", progress=False)
        index = build_index(cache, read_lesions_table(tmp / "cohort" / "lesions.csv"))
        windows = tuple((w.lo, w.hi) for w in parse_windows("lung,abdomen"))
        dataset = PretrainSlices(cache, index, ViewSpec(size=size, windows=windows), mode="lecl")
        loader = make_loader(dataset, local_batch=batch, workers=workers)
        loader.sampler.set_epoch(0)
        seen, start = 0, None
        for _batch in loader:
            if start is None:  # the first batch pays for starting the workers
                start = time.perf_counter()
            else:
                seen += 1
        return seen * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default="vit_conv_small,mambaout_tiny,vmamba_tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loader-scans", type=int, default=8, help="512-px scans of 40 slices for the loader")
    parser.add_argument("--no-loader", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, {args.size} px, batch {args.batch}"
          f"{' (bf16 autocast)' if device.type == 'cuda' else ''}")
    print(f"{'arch':16s} {'trunk M':>8s} {'step s':>8s} {'images/s':>9s} {'step/2-view fwd':>16s}")
    for arch in args.archs.split(","):
        r = bench_step(arch, batch=args.batch, size=args.size, device=device, repeats=args.repeats)
        print(f"{r['arch']:16s} {r['params_M']:8.1f} {r['step_s']:8.3f} {r['images_s']:9.2f} {r['ratio']:16.2f}")
    if not args.no_loader:
        rate = bench_loader(size=args.size, workers=args.workers, batch=32, scans=args.loader_scans, slices=40)
        print(f"loader: {rate:.1f} slices/s ({args.workers} workers, 512 px slices → two {args.size} px views)")


if __name__ == "__main__":
    main()

"""DrasCLR speed on this machine: view sampling, one training step and patch extraction (patches/s).

Usage: python benchmarks/drasclr_step.py [--batch 16] [--steps 3] [--device auto]
Full size = the paper's network (32³ patches of 1 mm, widths 8-16-32-64, 8 experts); test = the tiny test config.
A training step embeds B query views, B·R neighbours (R = 2) and B key views, so it touches 4·B patches.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from clearct.common.device import autocast_for, resolve_device  # noqa: E402
from clearct.encoders.drasclr.model import TEST_ENCODER, TEST_PATCH, DrasCLREncoder, EncoderSpec  # noqa: E402
from clearct.encoders.drasclr.patches import PatchSpec, nearest_neighbours, plan_patches  # noqa: E402
from clearct.pretrain.drasclr.losses import LocationQueue  # noqa: E402
from clearct.pretrain.drasclr.train import DrasCLR, draw_views, training_step  # noqa: E402
from drasclr_phantom import chest_phantom  # noqa: E402


def bench(name: str, enc: EncoderSpec, patch: PatchSpec, batch: int, steps: int, device: torch.device) -> None:
    vol = chest_phantom(z=120, n=256, seed=0)  # 2.5 × 1.5 × 1.5 mm voxels: a 300 × 384 × 384 mm field
    t = time.perf_counter()
    scan = plan_patches(vol, patch)
    plan_s = time.perf_counter() - t
    nbrs = [nearest_neighbours(scan.center_mm, 2)]
    gen = torch.Generator().manual_seed(0)
    model = DrasCLR(DrasCLREncoder(enc, patch), 128).to(device)
    queue = LocationQueue(4, 1024, 128, gen).to(device)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    sample_s, step_s = 0.0, 0.0
    for i in range(steps + 1):  # the first step warms up
        anchors = [(0, int(j)) for j in rng.integers(0, len(scan), batch)]
        t0 = time.perf_counter()
        views = draw_views([scan], nbrs, anchors, patch, gen).to(device)
        t1 = time.perf_counter()
        with autocast_for(device):
            losses = training_step(model, queue, views, tau=0.2, beta=1.0, momentum=0.999)
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        if i:
            sample_s, step_s = sample_s + t1 - t0, step_s + t2 - t1
    t = time.perf_counter()
    feats = model.encoder_q.embed_scan(vol, batch_size=64, device=device)
    extract_s = time.perf_counter() - t
    params = sum(p.numel() for p in model.encoder_q.parameters())
    print(f"{name}: encoder {params:,} params; {len(scan)} patches in the phantom lungs (plan {plan_s:.2f} s)")
    print(f"  view sampling  {4 * batch * steps / sample_s:8.1f} patches/s (B={batch}, 4B patches per step)")
    print(f"  training step  {4 * batch * steps / step_s:8.1f} patches/s ({step_s / steps:.2f} s/step)")
    print(f"  extraction     {len(feats) / extract_s:8.1f} patches/s (mask + grid + embed, {extract_s:.2f} s/scan)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    bench("full size", EncoderSpec(), PatchSpec(), args.batch, args.steps, device)
    bench("test config", TEST_ENCODER, TEST_PATCH, args.batch, args.steps, device)


if __name__ == "__main__":
    main()

"""Benchmark: 5-fold crossval of ABMIL on 1,000 bags × 1,400 instances × 576-d random features with a planted
signal (generated in memory, float16 like the loader keeps them). Prints wall time, peak RSS, the AUROC, and the
FLOP/s of the whole 5-fold run (training steps, validation and test passes, counted by torch's flop counter)
against a dense float32 matmul peak measured at the start and at the end of the same run.

    .venv/bin/python benchmarks/mil.py [--bags 1000] [--instances 1400] [--epochs 32] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from clearct.common.device import resolve_device, reuse_freed_memory
from clearct.evaluate.splits import make_splits, stratification_matrix
from clearct.mil.data import Bag
from clearct.mil.train import MilTraining, mil_flops, predict_scores, train_model
from clearct.modeling.tasks import make_loss, make_task


def planted(n_bags: int, n_inst: int, dim: int, seed: int = 0) -> list[Bag]:
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    bags = []
    for i in range(n_bags):
        y = i % 2
        f = rng.standard_normal((n_inst, dim), dtype=np.float32)
        if y:
            f[rng.choice(n_inst, 40, replace=False)] += 3.0 * direction
        bags.append(Bag(f"s{i}", f"p{i}", f.astype(np.float16), np.zeros(n_inst, np.int64),
                        np.arange(n_inst, dtype=np.int32), np.arange(n_inst, dtype=np.float32),
                        np.array([y], np.float32)))
    return bags


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bags", type=int, default=1000)
    ap.add_argument("--instances", type=int, default=1400)
    ap.add_argument("--dim", type=int, default=576)
    ap.add_argument("--epochs", type=int, default=32)
    ap.add_argument("--bag-size", type=int, default=512)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N")
    args = ap.parse_args()
    print(f"malloc tuning {reuse_freed_memory()} (as the clearct command; CLEARCT_MALLOC_TUNING=0: off)")
    t0 = time.perf_counter()
    bags = planted(args.bags, args.instances, args.dim)
    t_data = time.perf_counter() - t0
    spec = make_task("multilabel", ["t"], {})
    by_patient = {b.patient_id: b for b in bags}
    patients = list(by_patient)
    y = np.stack([b.y for b in bags])
    splits = make_splits(patients, stratification_matrix("multilabel", y), folds=5, seed=0)
    settings = MilTraining(epochs=args.epochs, bag_size=args.bag_size, patience=args.patience)
    device = resolve_device(args.device)
    from extract import matmul_peak  # benchmarks/ is the script's folder

    peak_start = matmul_peak(device)
    print(f"load {os.getloadavg()[0]:.2f}, matmul peak {peak_start / 1e9:.1f} GFLOP/s")
    flops = 0
    t1 = time.perf_counter()
    scores, labels = [], []
    for k, job in enumerate(splits.jobs):
        train = [by_patient[p] for p in job.train]
        val = [by_patient[p] for p in job.val]
        test = [by_patient[p] for p in job.test]
        loss = make_loss(spec, np.stack([b.y for b in train]))
        model, hist = train_model(spec, loss, train, val, settings, n_windows=1, seed=k, device=device, desc=job.name)
        s, _ = predict_scores(model, spec, test, device)
        step, item = mil_flops(model, train, settings, device)  # whole-bag forward of a median-length bag
        flops += step * hist[-1]["steps"] + item * (len(val) * len(hist) + len(test))
        scores.append(s[:, 0])
        labels.append([b.y[0] for b in test])
        print(f"{job.name}: {len(hist)} epochs, {hist[-1]['steps']} steps, {time.perf_counter() - t1:.1f} s so far")
    t_cv = time.perf_counter() - t1
    peak_end = matmul_peak(device)
    peak = max(peak_start, peak_end)
    auc = roc_auc_score(np.concatenate(labels), np.concatenate(scores))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"bags {args.bags} × {args.instances} × {args.dim}, device {device}, torch threads {torch.get_num_threads()}")
    print(f"data in memory: {t_data:.1f} s; 5-fold CV: {t_cv:.1f} s; peak RSS {rss:.2f} GB; pooled AUROC {auc:.3f}")
    print(f"model FLOPs {flops / 1e12:.2f} T in {t_cv:.0f} s = {flops / t_cv / 1e9:.1f} GFLOP/s = "
          f"{100 * flops / t_cv / peak:.0f} % of the matmul peak ({peak_start / 1e9:.1f} at the start, "
          f"{peak_end / 1e9:.1f} at the end); load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

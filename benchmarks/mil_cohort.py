"""MIL at cohort scale: crossval and deploy on planted feature files (bags × instances × dim, float16 h5).

Usage: python benchmarks/mil_cohort.py --bags 5000 --instances 1400 --dim 768 --work DIR
                                       [--feature-memory-gb 2] [--folds 2] [--epochs 1] [--skip-deploy]

Writes the cohort once (``clearct.mil.planted``, 50 bags at a time, so writing never holds more than 50 bags), then
runs ``clearct crossval`` and ``clearct deploy`` (on the same files, ``--allow-overlap``) each in its own process
under ``/usr/bin/time -v``: wall seconds, peak RSS, and the seconds per epoch from the log's epoch lines. Without
``--feature-memory-gb`` every bag is held in memory (bags × instances × dim × 2 bytes for crossval, × 4 for deploy).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

CHUNK = 50


def write_cohort(root: Path, bags: int, instances: int, dim: int) -> Path:
    import numpy as np

    from clearct.io.features import write_features
    from clearct.mil.planted import planted_bags

    labels = root / "labels.csv"
    if labels.exists():
        return labels
    rows = []
    for k in range(0, bags, CHUNK):
        for b in planted_bags(min(CHUNK, bags - k), dim=dim, instances=(instances, instances), seed=k,
                              prefix=f"c{k // CHUNK:04d}", dtype=np.float16):
            write_features(root / "features" / f"{b.features.scan_id}.h5", b.features)
            rows.append([b.features.patient_id, int(b.labels[0])])
    with open(labels.with_suffix(".tmp"), "w", newline="") as fh:
        csv.writer(fh).writerows([["patient_id", "t0"], *rows])
    os.replace(labels.with_suffix(".tmp"), labels)
    return labels


def timed(cmd: list[str]) -> dict:
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "clearct", *cmd], capture_output=True,
                          text=True)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"rc": proc.returncode, "wall_s": round(time.perf_counter() - start, 1),
            "peak_rss_gb": round(int(rss.group(1)) / 1e6, 2) if rss else None,
            "load": round((load + os.getloadavg()[0]) / 2, 1), "tail": proc.stderr.strip().splitlines()[-3:]}


def epoch_seconds(log: Path) -> list[float]:
    """Seconds between consecutive log lines of one fold's epochs (the first epoch from the fold's start line)."""
    stamps = []
    for line in log.read_text().splitlines():
        if re.search(r"epoch \d+: train loss|training bags", line):
            found = re.match(r"(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d)", line)
            if found:
                stamps.append((datetime.fromisoformat(found.group(1)), "training bags" in line))
    return [(b[0] - a[0]).total_seconds() for a, b in zip(stamps, stamps[1:]) if not b[1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bags", type=int, default=5000)
    parser.add_argument("--instances", type=int, default=1400)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--feature-memory-gb", type=float, default=None)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--skip-deploy", action="store_true")
    args = parser.parse_args()
    root = args.work / f"bags{args.bags}-{args.instances}x{args.dim}"
    start = time.perf_counter()
    labels = write_cohort(root, args.bags, args.instances, args.dim)
    disk = sum(p.stat().st_size for p in (root / "features").glob("*.h5"))
    print(f"cohort {root}: {disk / 1e9:.2f} GB of h5 ({time.perf_counter() - start:.0f} s to write or find)")
    memory = ["--feature-memory-gb", str(args.feature_memory_gb)] if args.feature_memory_gb else []
    tag = f"mem{args.feature_memory_gb}" if memory else "inmemory"
    cv = args.work / f"cv-{args.bags}-{tag}"
    result = timed(["crossval", "--features", str(root / "features"), "--labels", str(labels), "--targets", "t0",
                    "--out", str(cv), "--folds", str(args.folds), "--epochs", str(args.epochs), "--bootstrap", "100",
                    "--no-error-viewers", "--no-resume", "--device", "cpu", *memory])
    seconds = epoch_seconds(cv / "crossval.log") if (cv / "crossval.log").exists() else []
    print(f"crossval {args.bags} bags × {args.instances} × {args.dim}, {tag}: {result}; seconds per epoch "
          f"{[round(s) for s in seconds]}")
    if not args.skip_deploy:
        result = timed(["deploy", "--model", str(cv), "--features", str(root / "features"), "--labels", str(labels),
                        "--out", str(args.work / f"deploy-{args.bags}-{tag}"), "--allow-overlap", "--bootstrap",
                        "100", "--no-error-viewers", "--device", "cpu", *memory])
        print(f"deploy {args.bags} bags, {tag}: {result}")


if __name__ == "__main__":
    main()

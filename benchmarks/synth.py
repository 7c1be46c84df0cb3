"""Benchmark: wall time of `clearct synth` for 100 patients at 128×128×48 (DICOM, 2 worker processes).

Usage: .venv/bin/python benchmarks/synth.py [--patients 100] [--workers 2] [--format dicom]
Prints seconds in all, per patient, and the share spent rendering (single-process render of a few patients), and
the CPU seconds of the whole run (this process and its workers): on a shared machine CPU seconds / cores is the
wall time the run would need with the cores to itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import tempfile
import time

from clearct.synth import generate_cohort
from clearct.synth.cohort import render_patient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--format", default="dicom")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--slices", type=int, default=48)
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"machine: {platform.machine()} {model}")
    start, cpu_start = time.perf_counter(), time.process_time()
    for i in range(5):
        render_patient(0, i, size=args.size, slices=args.slices)
    render = (time.perf_counter() - start) / 5
    render_cpu = (time.process_time() - cpu_start) / 5
    used = _cpu_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_cohort(tmp, patients=args.patients, seed=0, format=args.format, size=args.size,
                                  slices=args.slices, workers=args.workers)
    total = summary["seconds"]
    cpu_s = _cpu_seconds() - used
    print(f"render only, 1 process: {render:.2f} s/patient wall, {render_cpu:.2f} s/patient CPU")
    print(f"load average during the run: {os.getloadavg()[0]:.1f}")
    print(f"{args.patients} patients {args.size}x{args.size}x{args.slices} {args.format}, {args.workers} workers: "
          f"{total:.1f} s ({total / args.patients:.2f} s/patient), {summary['lesions_drawn']} lesions")
    cores = len(os.sched_getaffinity(0))
    print(f"CPU time of the run: {cpu_s:.1f} s ({cpu_s / args.patients:.2f} s/patient) → {cpu_s / cores:.1f} s "
          f"on {cores} idle cores")


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the worker processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


if __name__ == "__main__":
    main()

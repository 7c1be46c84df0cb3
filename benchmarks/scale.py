"""How every stage's wall time, peak memory and disk grow with the cohort: scans, slices per scan, in-plane size.

Usage: python benchmarks/scale.py [--full] [--axes scans,slices,inplane] [--stages synth,read,...] [--out DIR]
                                  [--results benchmarks/RESULTS.md] [--figure docs/scale.png]

For every axis and size a phantom cohort is written (``clearct synth``, DICOM) and each stage runs once on it in its
own process under ``/usr/bin/time -v`` (wall seconds, peak RSS); disk is the size of what the stage wrote. Stages:
synth, read (``read_ct`` of every scan), pretrain (slice cache build + index + loader + 6 MoCo steps of
``resnet_tiny`` at 64 px, batch 16), extract (``resnet_tiny``, random init, 64 px, one window), crossval (ABMIL,
2 folds, 2 epochs), deploy, attention, predict (one scan), finetune3d (resnet10 on a 32×64×64 grid, 1 epoch) and
drasclr (``--drasclr-preset cpu``, 1 epoch). The growth exponent of a stage along an axis is the least-squares
slope of log(cost) against log(size). Default sizes (8 min on 2 idle cores; 70 min at load 12): scans 8/16/32
(64² × 12 slices), slices 16/48/144 (128², 4 scans), in-plane 64/128/256 (12 slices, 4 scans). ``--full``: the
sizes of the question — scans 50/200/800 (96² × 16 slices), slices 64/256/700 (512², 4 scans), in-plane
128/256/512 (32 slices, 4 scans) — hours on 2 cores (DrasCLR and finetune3d dominate).
Every row records the machine's load average, which on a shared machine inflates wall times (not RSS or disk).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ["synth", "read", "pretrain", "extract", "crossval", "deploy", "attention", "predict", "finetune3d", "drasclr"]
# axis → (sizes, fixed geometry: patients, size, slices); the axis value replaces its own field
AXES = {
    "scans": ((50, 200, 800), {"patients": 0, "size": 96, "slices": 16}),
    "slices": ((64, 256, 700), {"patients": 4, "size": 512, "slices": 0}),
    "inplane": ((128, 256, 512), {"patients": 4, "size": 0, "slices": 32}),
}
QUICK = {"scans": (8, 16, 32), "slices": (16, 48, 144), "inplane": (64, 128, 256)}
QUICK_FIXED = {"scans": {"size": 64, "slices": 12}, "slices": {"size": 128}, "inplane": {"slices": 12}}
FIELD = {"scans": "patients", "slices": "slices", "inplane": "size"}
CV = ["--folds", "2", "--epochs", "2", "--min-steps", "20", "--bootstrap", "50", "--device", "cpu"]
ENC = ["--encoder", "resnet_tiny", "--random-init", "--image-size", "64"]


def _du(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _target(labels: Path) -> str:
    """The lesion location closest to half positive in ``labels``: a cohort of 4 patients can have every patient
    positive for one location (lung, say), which no cross-validation can score; the stage's cost does not depend
    on which location it is."""
    import csv

    from clearct.synth import LOCATIONS

    with open(labels, newline="") as fh:
        rows = list(csv.DictReader(fh))
    share = {loc: sum(int(r[loc]) for r in rows) / len(rows) for loc in LOCATIONS}
    return min(LOCATIONS, key=lambda loc: abs(share[loc] - 0.5))


def _cli(args: list[str]) -> None:
    from clearct.cli import main

    rc = main(args)
    if rc not in (0, None):
        raise SystemExit(f"clearct {args[0]} exited {rc}")


def run_stage(stage: str, work: Path, geometry: dict) -> Path:
    """Run one stage in this process; returns the folder whose size is its disk."""
    cohort, feats, cv = work / "cohort", work / "features", work / "cv"
    scans, labels = cohort / "scans.csv", cohort / "labels.csv"
    if stage == "synth":
        from clearct.config import SynthConfig
        from clearct.synth import generate_cohort

        generate_cohort(SynthConfig(out=cohort, seed=0, format="dicom", scan_range="cap", workers=1,
                                    location_prevalence=0.5, **geometry), progress=False)
        return cohort / "scans"
    if stage == "read":
        from clearct.io import read_ct, read_scans_table

        for record in read_scans_table(scans):
            read_ct(record.path)
        return work / "none"
    if stage == "pretrain":
        _pretrain_steps(scans, work / "slice-cache")
        return work / "slice-cache"
    if stage == "extract":
        _cli(["extract", "--scans", str(scans), *ENC, "--windows", "abdomen", "--batch-size", "32", "--out", str(feats)])
        return feats
    if stage == "crossval":
        _cli(["crossval", "--features", str(feats), "--labels", str(labels), "--targets", _target(labels),
              "--out", str(cv), *CV, "--no-error-viewers"])
        return cv
    if stage == "deploy":
        _cli(["deploy", "--model", str(cv), "--features", str(feats), "--labels", str(labels), "--allow-overlap",
              "--out", str(work / "deploy"), "--bootstrap", "50", "--no-error-viewers", "--device", "cpu"])
        return work / "deploy"
    if stage == "attention":
        _cli(["attention", "--model", str(cv), "--features", str(feats), "--out", str(work / "attention"),
              "--figures", "1", "--no-viewers", "--device", "cpu"])
        return work / "attention"
    if stage == "predict":
        from clearct.io import read_scans_table

        first = read_scans_table(scans)[0].path
        _cli(["predict", str(first), "--model", str(cv), *ENC[:3], "--out", str(work / "predict"), "--no-viewer",
              "--no-dicom-outputs", "--no-heatmaps", "--device", "cpu"])
        return work / "predict"
    if stage == "finetune3d":
        _cli(["finetune3d", "--scans", str(scans), "--labels", str(labels), "--targets", _target(labels), "--folds", "2",
              "--epochs", "1", "--arch", "resnet10", "--grid", "32,64,64", "--bootstrap", "50", "--device", "cpu",
              "--workers", "1", "--out", str(work / "finetune3d")])
        return work / "finetune3d"
    if stage == "drasclr":
        _cli(["pretrain", "--method", "drasclr", "--scans", str(scans), "--epochs", "1", "--drasclr-preset", "cpu",
              "--workers", "1", "--device", "cpu", "--out", str(work / "drasclr")])
        return work / "drasclr"
    raise SystemExit(f"unknown stage {stage}")


def _pretrain_steps(scans: Path, cache_dir: Path, steps: int = 6) -> None:
    """The pretraining data path at this cohort size (cache, index, loader) and a few training steps."""
    import torch

    from clearct.encoders import create_encoder
    from clearct.io import read_scans_table
    from clearct.preprocess import parse_windows
    from clearct.pretrain.cache import build_cache, build_index
    from clearct.pretrain.data import PretrainSlices, make_loader
    from clearct.pretrain.train import LossSpec, build_moco, train_step
    from clearct.pretrain.views import ViewSpec

    cache = build_cache(read_scans_table(scans), cache_dir, progress=False)
    index = build_index(cache)
    windows = tuple((w.lo, w.hi) for w in parse_windows("lung,abdomen"))
    loader = make_loader(PretrainSlices(cache, index, ViewSpec(size=64, windows=windows), mode="moco"),
                         local_batch=16, workers=1)
    loader.sampler.set_epoch(0)  # type: ignore[attr-defined]
    torch.manual_seed(0)
    model = build_moco(create_encoder("resnet_tiny", image_size=64), dim=64, mlp_dim=256, tau=0.2, distributed=False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], weight_decay=0.1)
    device = torch.device("cpu")
    for step, (x1, x2, _) in enumerate(loader):
        train_step(model, optimizer, x1, x2, None, lr=1e-4, m=0.99, loss_spec=LossSpec(lam=0.0), device=device)
        if step + 1 == steps:
            break


def measure(stage: str, work: Path, geometry: dict) -> dict:
    """Run ``stage`` in a child process under /usr/bin/time -v: wall seconds, peak RSS, disk, load average."""
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--child", stage, "--work", str(work),
           "--geometry", json.dumps(geometry)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    row = {"stage": stage, "wall_s": round(wall, 2), "peak_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None,
           "load": round((load + os.getloadavg()[0]) / 2, 1), "ok": proc.returncode == 0}
    if proc.returncode == 0:
        row["disk_mb"] = round(json.loads(proc.stdout.strip().splitlines()[-1])["disk"] / 1e6, 2)
    else:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][-300:]
    return row


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y on log x (None with fewer than two positive points)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def at(row: dict) -> int:
    """The row's position on its axis (scans, slices per scan or in-plane pixels)."""
    return int(row[FIELD[row["axis"]]])


def points(rows: list[dict], axis: str, stage: str, ok: bool = True) -> list[dict]:
    return sorted((r for r in rows if r["axis"] == axis and r["stage"] == stage and (r["ok"] or not ok)), key=at)


def exponents(rows: list[dict]) -> dict:
    out: dict = {}
    for axis in AXES:
        for stage in STAGES:
            sub = points(rows, axis, stage)
            if len(sub) >= 2:
                out[(axis, stage)] = {k: slope([at(r) for r in sub], [r[k] for r in sub])
                                      for k in ("wall_s", "peak_rss_mb", "disk_mb")}
    return out


def table(rows: list[dict]) -> str:
    fit = exponents(rows)
    lines = ["| axis | stage | sizes | wall s | peak RSS MB | disk MB | load | exponent wall / RSS / disk |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    for axis in AXES:
        for stage in STAGES:
            sub = points(rows, axis, stage, ok=False)
            if not sub:
                continue
            def cell(k: str, sub: list[dict] = sub) -> str:
                return " / ".join("fail" if not r["ok"] else str(r.get(k)) for r in sub)

            e = fit.get((axis, stage), {})
            lines.append(f"| {axis} | {stage} | {' / '.join(str(at(r)) for r in sub)} | {cell('wall_s')} | "
                         f"{cell('peak_rss_mb')} | {cell('disk_mb')} | {' / '.join(str(r['load']) for r in sub)} | "
                         f"{fmt(e.get('wall_s'))} / {fmt(e.get('peak_rss_mb'))} / {fmt(e.get('disk_mb'))} |")
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(AXES), figsize=(5 * len(AXES), 8), squeeze=False)
    for col, axis in enumerate(AXES):
        for row_i, key in enumerate(("wall_s", "peak_rss_mb")):
            ax = axes[row_i][col]
            for stage in STAGES:
                sub = points(rows, axis, stage)
                if sub:
                    ax.plot([at(r) for r in sub], [r[key] for r in sub], "o-", label=stage)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel({"scans": "scans", "slices": "slices per scan", "inplane": "in-plane pixels"}[axis])
            ax.set_ylabel({"wall_s": "wall s", "peak_rss_mb": "peak RSS MB"}[key])
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the sizes of the question (hours on 2 cores)")
    parser.add_argument("--axes", default=",".join(AXES))
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", type=Path, default=None, help="keep the rows (scale.jsonl) and the work folders here")
    parser.add_argument("--results", type=Path, default=None, help="append the table to this RESULTS.md")
    parser.add_argument("--figure", type=Path, default=None, help="write the log–log figure here")
    parser.add_argument("--rows", type=Path, default=None, help="only print the table (and figure) of a scale.jsonl")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--geometry", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        target = run_stage(args.child, args.work, json.loads(args.geometry))
        print(json.dumps({"disk": _du(target)}))
        return
    if args.rows:
        rows = [json.loads(line) for line in args.rows.read_text().splitlines() if line.strip()]
        print(table(rows))
        if args.figure:
            figure(rows, args.figure)
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="clearct-scale-"))
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    stages = args.stages.split(",")
    if "synth" not in stages:
        stages = ["synth", *stages]  # every other stage reads the cohort it writes
    begin = time.perf_counter()
    for axis in args.axes.split(","):
        sizes, fixed = AXES[axis]
        fixed = {**fixed, **({} if args.full else QUICK_FIXED[axis])}
        for size in sizes if args.full else QUICK[axis]:
            geometry = {**fixed, FIELD[axis]: size}
            work = out / f"{axis}-{size}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            for stage in stages:
                row = {"axis": axis, **geometry, **measure(stage, work, geometry)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                with open(out / "scale.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
            if args.out is None:
                shutil.rmtree(work, ignore_errors=True)
    text = table(rows)
    print(text)
    print(f"total {time.perf_counter() - begin:.0f} s")
    if args.figure:
        figure(rows, args.figure)
    if args.results:
        with open(args.results, "a") as fh:
            fh.write("\n" + text + "\n")


if __name__ == "__main__":
    main()

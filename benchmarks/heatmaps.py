"""Heatmaps: (a) the time for the top 10 slices of a 300-slice 512² scan with ``mambaout_tiny`` at 224 px on the
CPU (target ≤ 30 s on 2 cores), (b) the pointing game of a trained demo folder's arms, per location.

    .venv/bin/python benchmarks/heatmaps.py time [--method M] [--threads 2] [--repeats 3] [--profile] [--record]
    .venv/bin/python benchmarks/heatmaps.py pointing DEMO_DIR [--method M] [--top-k 6] [--scans N] [--record]

``--method``: ``gradient-input`` (the default of predict and attention) or ``gradcam`` (docs/interpret.md).

(a) renders patient 0 of ``clearct synth --size 512 --slices 300 --scan-range cap`` in memory, embeds every slice
in the lung and abdomen windows with random-init ``mambaout_tiny`` (what predict holds before its heatmaps), builds
a 5-model ABMIL ensemble for the 8 lesion locations (registry models at their default settings, feature scaler
fitted on the scan; random weights — the cost does not depend on them) and times
:func:`clearct.inference.heatmaps.scan_heatmaps` for the top 10 attended instances (every target), then writing
the h5 file and the PNG overlays. ``--record`` appends the figures to benchmarks/RESULTS.md (section "heatmaps").

(b) for every arm of a demo folder (``clearct.report.layouts.DemoLayout``) with a lesion-location crossval: the
fold ensemble on the external cohort's features, heatmaps of its top-k attended instances per annotated scan, and
the pointing game over those instances that lie on a lesion (``clearct.evaluate.localization``): the map of the
lesion's location target, hit when its peak falls in the lesion box grown by half its size. The encoder of each arm
comes from the extract run that wrote its features (a run folder, or the random-init registry entry).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import get_args

import numpy as np
import torch

from clearct.config import HeatmapMethod, SynthSettings
from clearct.encoders import create_encoder
from clearct.encoders.embed import embed_volume, prepare_encoder
from clearct.evaluate.localization import lesion_pairs, pointing_game
from clearct.inference.ensembles import load_mil_models
from clearct.inference.heatmaps import heatmap_encoder, scan_heatmaps, write_scan_heatmaps
from clearct.io import read_ct, read_lesions_table, read_scans_table
from clearct.mil.data import Bag, load_cohort
from clearct.mil.models import build_model
from clearct.mil.store import MilEnsemble
from clearct.modeling.tasks import TaskSpec
from clearct.preprocess import parse_windows
from clearct.report.layouts import ARM_TITLES, DEMO_ARMS, DemoLayout
from clearct.synth import LOCATIONS
from clearct.synth.cohort import render_patient

RESULTS = Path(__file__).with_name("RESULTS.md")
METHODS = get_args(HeatmapMethod)
SECTION = "## heatmaps"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    return f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}, {torch.get_num_threads()} threads"


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def record(lines: list[str]) -> None:
    """Append to benchmarks/RESULTS.md: the section header once, then this run's lines."""
    text = RESULTS.read_text()
    block = ("\n" if text.endswith("\n") else "\n\n") + ("" if f"\n{SECTION}\n" in text else f"{SECTION}\n\n")
    RESULTS.write_text(text + block + "\n".join(lines) + "\n")
    print(f"recorded in {RESULTS}")


def demo_ensemble(dim: int, models: int, bag: Bag, windows: list) -> MilEnsemble:
    spec = TaskSpec("multilabel", list(LOCATIONS))
    nets = []
    for seed in range(models):
        torch.manual_seed(seed)
        net = build_model("abmil", dim, spec.n_out, n_windows=len(windows), window_embedding=False, hidden=256,
                          dropout=0.25, standardize=True)
        net.scaler.fit([bag.feats])
        nets.append(net.eval())
    meta = {"task": spec.to_json(), "windows": windows, "thresholds": [0.5] * spec.n_out,
            "encoder": {"encoder": "mambaout_tiny", "weights_sha256": "random-init", "image_size": 224},
            "settings": {"eval_instances": 32768}, "train_patients": [], "val_patients": []}
    return MilEnsemble(nets, [meta] * models, torch.device("cpu"))


def run_time(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    started = dt.datetime.now(dt.timezone.utc)
    load_before = load_text()
    t0 = time.perf_counter()
    phantom = render_patient(0, 0, SynthSettings(size=512, slices=args.slices, scan_range="cap"))
    volume = phantom.volume
    render_s = time.perf_counter() - t0
    encoder = prepare_encoder(create_encoder("mambaout_tiny", image_size=224).eval())
    windows = parse_windows("lung,abdomen")
    t0 = time.perf_counter()
    f = embed_volume(volume, encoder, windows, batch_size=32, device="cpu")
    embed_s = time.perf_counter() - t0
    bag = Bag(f.scan_id, f.patient_id, f.feats.astype(np.float32), f.window.astype(np.int64),
              f.slice_index.astype(np.int32), f.z_mm.astype(np.float32), np.zeros(0, np.float32))
    ensemble = demo_ensemble(f.embed_dim, 5, bag, [[w.name, w.lo, w.hi] for w in windows])
    scores, attention = ensemble.predict([bag])
    print(f"scan {volume.hu.shape} rendered in {render_s:.1f} s, embedded ({len(bag)} instances) in {embed_s:.1f} s")
    times = []
    for r in range(args.repeats):
        profiler = cProfile.Profile() if args.profile and r == args.repeats - 1 else None
        t0 = time.perf_counter()
        if profiler:
            profiler.enable()
        maps = scan_heatmaps(volume.hu, bag, attention[0], ensemble, encoder, top_k=10, batch_size=args.batch,
                             method=args.method)
        if profiler:
            profiler.disable()
        times.append(time.perf_counter() - t0)
        print(f"heatmaps, top 10 × {len(maps.targets)} targets: {times[-1]:.2f} s (load {load_text()})")
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_scan_heatmaps(Path(tmp), maps, volume.hu, dict(zip(ensemble.spec.output_names, map(float, scores[0]))))
        write_s = time.perf_counter() - t0
        size_mb = (Path(tmp) / f"{maps.scan_id}.h5").stat().st_size / 2**20
    median = statistics.median(times)
    verdict = "meets" if median <= 30 else "misses"
    lines = [
        f"`benchmarks/heatmaps.py time --method {args.method} --threads {args.threads} --repeats {args.repeats} "
        f"--batch {args.batch}` "
        f"({started:%Y-%m-%d %H:%M} UTC; {machine()}; load average 1/5/15 min {load_before} before, "
        f"{load_text()} after): a {volume.hu.shape[0]}-slice 512² phantom (synth patient 0, cap range), "
        f"`mambaout_tiny` at 224 px (random init), lung + abdomen windows, a 5-model ABMIL ensemble over the 8 lesion "
        "locations.",
        "",
        "| step | seconds |",
        "|---|---|",
        f"| embed the scan ({len(bag)} instances; predict does this anyway) | {embed_s:.1f} |",
        f"| **{args.method} heatmaps of the top 10 instances, 8 targets** (median of {args.repeats}: "
        f"{', '.join(f'{t:.2f}' for t in times)}) | **{median:.2f}** |",
        f"| write `heatmaps/<scan_id>.h5` ({size_mb:.1f} MB) + 10 PNG overlays of 8 panels | {write_s:.1f} |",
        "",
        f"Heatmaps: {median:.2f} s, which {verdict} the 30 s target on {args.threads} threads.",
    ]
    print("\n".join(lines))
    if args.record:
        record(lines)


def arm_pointing(at: DemoLayout, arm: str, top_k: int, max_scans: int | None, method: str) -> dict:
    """Pointing game of one arm's location ensemble on the external cohort, in all and per lesion location."""
    model = at.crossval("location", arm)
    features = at.features(arm, "external")
    ensemble = load_mil_models(model, "pointing game")
    encoder = heatmap_encoder(ensemble, encoder=None, weights=None, features=features, where=model, method=method)
    cohort = load_cohort(features, None, None, dtype=np.float32, windows=ensemble.window_names)
    paths = {r.scan_id: r.path for r in read_scans_table(at.external / "scans.csv")}
    boxes: dict[str, list] = {}
    for box in read_lesions_table(at.external / "lesions.csv"):
        boxes.setdefault(box.scan_id, []).append(box)
    bags = [b for b in cohort.bags if b.scan_id in boxes and b.scan_id in paths][:max_scans]
    _, attention = ensemble.predict(bags)
    pairs, top_total = [], 0
    t0 = time.perf_counter()
    for bag, a in zip(bags, attention):
        hu = read_ct(paths[bag.scan_id]).hu
        maps = scan_heatmaps(hu, bag, a, ensemble, encoder, top_k=top_k, method=method)
        top_total += len(maps)
        pairs += lesion_pairs(maps.maps, maps.slice_index, maps.targets, boxes[bag.scan_id])
    score = pointing_game([(m, box) for _, m, box in pairs])
    by_location = {loc: pointing_game([(m, box) for label, m, box in pairs if label == loc])
                   for loc in sorted({label for label, _, _ in pairs})}
    return {"arm": arm, "scans": len(bags), "top": top_total, "on_lesion": len(pairs), "hits": score.hits,
            "share": score.share, "seconds": time.perf_counter() - t0, "encoder": encoder.encoder_name,
            "weights": encoder.weights_sha256[:12],
            "by_location": ", ".join(f"{loc} {p.hits}/{p.slices}" for loc, p in by_location.items())}


def run_pointing(args: argparse.Namespace) -> None:
    at = DemoLayout(Path(args.demo).resolve())
    arms = [a for a in DEMO_ARMS if any(at.crossval("location", a).glob("fold-*/model.json"))]
    if not arms:
        sys.exit(f"{at.root}: no lesion-location crossval folder of any arm ({', '.join(DEMO_ARMS)})")
    started = dt.datetime.now(dt.timezone.utc)
    load_before = load_text()
    rows = [arm_pointing(at, arm, args.top_k, args.scans, args.method) for arm in arms]
    lines = [
        f"`benchmarks/heatmaps.py pointing {at.root} --method {args.method} --top-k {args.top_k}` "
        f"({started:%Y-%m-%d %H:%M} UTC; load average {load_before} before, {load_text()} after): the location "
        f"ensembles on the external cohort; per annotated scan the top {args.top_k} attended instances, those on a "
        "lesion slice scored by the map of the lesion's location.",
        "",
        "| arm | encoder (weights) | scans | top instances on a lesion slice | pointing game (peak in box ×1.5) "
        "| per location (hits / slices) | s |",
        "|---|---|---|---|---|---|---|",
        *[f"| {ARM_TITLES[r['arm']]} | {r['encoder']} ({r['weights']}) | {r['scans']} | {r['on_lesion']} / {r['top']} "
          f"| {r['hits']} / {r['on_lesion']} = {r['share']:.3f} | {r['by_location']} | {r['seconds']:.1f} |"
          for r in rows],
    ]
    print("\n".join(lines))
    if args.record:
        record(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("time", help="(a) time the heatmaps of a 300-slice 512² scan")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--slices", type=int, default=300)
    t.add_argument("--batch", type=int, default=16, help="instances of one window per forward/backward")
    t.add_argument("--profile", action="store_true")
    t.add_argument("--method", choices=METHODS, default="gradient-input")
    t.add_argument("--record", action="store_true")
    p = sub.add_parser("pointing", help="(b) the pointing game of a trained demo folder")
    p.add_argument("demo", type=Path)
    p.add_argument("--top-k", type=int, default=6, help="the demo's attention --top-k")
    p.add_argument("--method", choices=METHODS, default="gradient-input")
    p.add_argument("--scans", type=int, default=None, help="at most this many annotated external scans")
    p.add_argument("--record", action="store_true")
    args = parser.parse_args()
    run_time(args) if args.what == "time" else run_pointing(args)


if __name__ == "__main__":
    main()

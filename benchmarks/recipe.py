"""One pretraining recipe measured end to end on a cohort: pretrain → extract → lesion-slice probe → ABMIL crossval.

    .venv/bin/python benchmarks/recipe.py --cohort C --arch resnet_tiny --method lecl --lam 1 \\
        --lesion-share 0.5 --lesion-crop-scale 2,4 --epochs 2 --batch-size 64 --out OUT/lecl
    .venv/bin/python benchmarks/recipe.py --cohort C --arch resnet_tiny --method random --out OUT/random

``--cohort`` is a clearct synth folder (scans.csv, labels.csv, lesions.csv); with ``--synth`` it is written first
(the demo cohort's settings unless given). ``--pretrain-cohort`` pretrains on another (e.g. larger, unlabelled)
cohort. Prints one row — arch, size, batch, steps, pretraining minutes, train images/s, lesion-slice probe
(clearct.evaluate.probe), ABMIL macro CV AUROC with its 95 % CI and per location — and appends it to
``--table`` (CSV), so a series of calls builds the recipe table of benchmarks/RESULTS.md. ``uptime``'s load is
recorded with every row: pretraining minutes on a shared machine are not comparable without it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

from clearct.config import CrossvalConfig, ExtractConfig, PretrainConfig, SynthConfig
from clearct.synth.labels import LOCATIONS

DEMO_COHORT = {"patients": 200, "size": 128, "slices": 32, "scan_range": "cap", "lesion_contrast": 4.0,
               "lesion_size_mm": [30.0, 80.0]}


def _metrics(path: Path) -> dict:
    with open(path, newline="") as fh:
        return {r["target"]: r for r in csv.DictReader(fh) if r["set"] == "cv" and r["metric"] == "auroc"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", type=Path, required=True)
    parser.add_argument("--synth", action="store_true", help="write --cohort first (clearct synth, demo settings)")
    parser.add_argument("--synth-json", default="{}", help="synth settings overriding the demo's, as JSON")
    parser.add_argument("--pretrain-cohort", type=Path, help="pretrain on this cohort's scans.csv/lesions.csv")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table", type=Path, default=Path("benchmarks/out/recipes.csv"))
    parser.add_argument("--arch", default="resnet_tiny")
    parser.add_argument("--image-size", type=int, default=128, help="pretraining (view) size")
    parser.add_argument("--extract-size", type=int, help="extraction size (default: --image-size)")
    parser.add_argument("--method", default="lecl", help="lecl, moco, supervised or random (no pretraining)")
    parser.add_argument("--pretrain-json", default="{}", help="further PretrainConfig fields as JSON")
    parser.add_argument("--mil-lr", type=float, default=1e-3)
    parser.add_argument("--mil-epochs", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--reuse", action="store_true",
                        help="keep a finished encoder in --out (resume an unfinished one) and extracted features")
    args, rest = parser.parse_known_args()
    extra = json.loads(args.pretrain_json)
    # remaining --flag value pairs are PretrainConfig fields (e.g. --lam 1 --epochs 2 --lesion-share 0.5)
    for flag, value in zip(rest[::2], rest[1::2]):
        extra[flag.lstrip("-").replace("-", "_")] = value

    from clearct.evaluate.efficiency import training_budget
    from clearct.evaluate.probe import lesion_slice_probe
    from clearct.extract.run import run_extract
    from clearct.mil.crossval import run_crossval
    from clearct.pretrain.train import run_pretrain
    from clearct.synth.cohort import run_synth

    out = args.out.resolve()
    if args.synth and not (args.cohort / "lesions.csv").is_file():
        run_synth(SynthConfig(out=args.cohort, **{**DEMO_COHORT, **json.loads(args.synth_json)}))
    source = args.pretrain_cohort or args.cohort
    load = os.getloadavg()[0]
    minutes, rate, steps, batch = 0.0, float("nan"), 0, extra.get("batch_size", "")
    if args.method == "random":
        encoder = f"random:{args.arch}"
    else:
        extra.setdefault("cache_dir", source / ".slice-cache")  # decoded once, shared by every recipe run
        cfg = PretrainConfig(scans=source / "scans.csv", lesions=source / "lesions.csv", arch=args.arch,
                             method=args.method, image_size=args.image_size, out=out / "encoder",
                             workers=args.workers, **extra)
        if not (args.reuse and (out / "encoder" / "encoder.json").is_file()):
            run_pretrain(cfg.model_copy(update={"resume": args.reuse}))
        steps, batch, rate, minutes = training_budget(out / "encoder")
        encoder = str(out / "encoder")
    size = args.extract_size or args.image_size
    run_extract(ExtractConfig(scans=args.cohort / "scans.csv", encoder=encoder, out=out / "features",
                              image_size=size, allow_resize=True, workers=args.workers))
    probe = lesion_slice_probe(out / "features", args.cohort / "lesions.csv")
    run_crossval(CrossvalConfig(features=out / "features", labels=args.cohort / "labels.csv", targets=list(LOCATIONS),
                                out=out / "crossval", lr=args.mil_lr, epochs=args.mil_epochs, min_steps=200,
                                bootstrap=500))
    m = _metrics(out / "crossval" / "metrics.csv")
    macro = m["macro"]
    extra.pop("cache_dir", None)
    row = {"date": time.strftime("%Y-%m-%d %H:%M"), "load": round(load, 1), "cohort": str(args.cohort),
           "pretrain_cohort": str(source), "arch": args.arch, "image_size": args.image_size,
           "extract_size": size, "method": args.method,
           "settings": json.dumps(extra), "batch": batch, "steps": steps, "minutes": round(minutes, 1),
           "images_per_s": round(rate, 1), "probe": round(probe["mean"], 3),
           "abmil_macro": f"{float(macro['value']):.3f} [{float(macro['ci_low']):.3f}, {float(macro['ci_high']):.3f}]",
           **{t: round(float(m[t]["value"]), 3) for t in LOCATIONS if t in m}}
    args.table.parent.mkdir(parents=True, exist_ok=True)
    new = not args.table.is_file()
    with open(args.table, "a", newline="") as fh:
        writer = csv.DictWriter(fh, list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
    print(" | ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()

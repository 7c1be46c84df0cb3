"""Render the recipe runs of benchmarks/recipe.py (its --table CSV) as the markdown table of benchmarks/RESULTS.md,
or, with ``--frontier COHORT``, the frontier as CSV (the "Frontier" table of RESULTS.md "recipe"): the LECL and
supervised-ceiling runs of the CPU recipe (resnet_tiny, 128 px, lesion share 0.5) on that cohort.

    .venv/bin/python benchmarks/recipe_table.py benchmarks/out/recipes.csv
    .venv/bin/python benchmarks/recipe_table.py benchmarks/out/recipes.csv --frontier demo200v2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys

COLUMNS = ["run", "arch", "px (train → extract)", "method, settings", "batch", "steps", "train min", "img/s",
           "load", "lesion-slice probe", "ABMIL macro CV AUROC [95% CI]"]
FRONTIER = ["method", "arch", "image_size", "steps", "batch", "minutes", "load", "probe", "auroc", "ci_low",
            "ci_high", "date", "machine"]


def _name(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def markdown(rows: list[dict]) -> None:
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for i, r in enumerate(rows, 1):
        settings = {k: v for k, v in json.loads(r["settings"]).items() if k not in ("batch_size",)}
        what = r["method"] + (" " + ", ".join(f"{k}={v}" for k, v in settings.items()) if settings else "")
        cohort = _name(r["cohort"]) + ("" if r["pretrain_cohort"] == r["cohort"] else
                                       f", pretrained on {_name(r['pretrain_cohort'])}")
        print(f"| {i} ({cohort}) | {r['arch']} | {r['image_size']} → {r['extract_size']} | {what} | {r['batch']} | "
              f"{r['steps']} | {r['minutes']} | {r['images_per_s']} | {r['load']} | {r['probe']} | "
              f"{r['abmil_macro']} |")


def _machine() -> str:
    with open("/proc/cpuinfo") as fh:
        model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "CPU")
    return f"{model.split(' Processor')[0]}, {os.cpu_count()} cores"


def frontier(rows: list[dict], cohort: str) -> None:
    writer = csv.DictWriter(sys.stdout, FRONTIER)
    writer.writeheader()
    machine = _machine()
    for r in rows:
        settings = json.loads(r["settings"])
        recipe = (r["arch"] == "resnet_tiny" and r["image_size"] == r["extract_size"] == "128"
                  and settings.get("lesion_share") == "0.5" and r["method"] in ("lecl", "supervised")
                  and (r["method"] == "supervised" or settings.get("lesion_crop_scale") == "2,4"))
        if not recipe or _name(r["cohort"]) != cohort or r["pretrain_cohort"] != r["cohort"]:
            continue
        auroc, lo, hi = map(float, re.findall(r"[0-9.]+", r["abmil_macro"]))
        writer.writerow({**{k: r[k] for k in ("method", "arch", "image_size", "steps", "batch", "minutes", "load",
                                               "probe", "date")},
                         "auroc": auroc, "ci_low": lo, "ci_high": hi, "machine": machine})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table")
    parser.add_argument("--frontier", metavar="COHORT", help="write the frontier CSV of this cohort's runs instead")
    args = parser.parse_args()
    with open(args.table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if args.frontier:
        frontier(rows, args.frontier)
    else:
        markdown(rows)


if __name__ == "__main__":
    main()

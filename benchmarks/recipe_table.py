"""Render the recipe runs of benchmarks/recipe.py (its --table CSV) as the markdown table of benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/recipe_table.py benchmarks/out/recipes.csv
"""

from __future__ import annotations

import csv
import json
import sys

COLUMNS = ["run", "arch", "px (train → extract)", "method, settings", "batch", "steps", "train min", "img/s",
           "load", "lesion-slice probe", "ABMIL macro CV AUROC [95% CI]"]


def main() -> None:
    with open(sys.argv[1], newline="") as fh:
        rows = list(csv.DictReader(fh))
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for i, r in enumerate(rows, 1):
        settings = {k: v for k, v in json.loads(r["settings"]).items() if k not in ("batch_size",)}
        what = r["method"] + (" " + ", ".join(f"{k}={v}" for k, v in settings.items()) if settings else "")
        cohort = r["cohort"].rstrip("/").rsplit("/", 1)[-1]
        print(f"| {i} ({cohort}) | {r['arch']} | {r['image_size']} → {r['extract_size']} | {what} | {r['batch']} | "
              f"{r['steps']} | {r['minutes']} | {r['images_per_s']} | {r['load']} | {r['probe']} | "
              f"{r['abmil_macro']} |")


if __name__ == "__main__":
    main()

"""Does attention point at the lesion? The share of positive scans whose most attended slice lies on (or within
``tolerance`` slices of) a lesion of the location the model predicts most strongly.

Inputs are what the stages write: ``attention.csv`` (scan_id, slice_index, window, attention; one row per instance),
``predictions.csv`` (scan_id, target, probability, label) of the same models on the same scans, and the cohort's
``lesions.csv`` (a lesion covers ``slice_first..slice_last`` where the table has them, else its key slice).
A scan is positive when any target's label is 1; its predicted location is the target with the highest score; its
top slice is the slice of the instance with the highest attention (any window).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from clearct.io.tables import read_lesions_table


@dataclass(frozen=True)
class Localization:
    hits: int
    scans: int  # positive scans with attention and predictions

    @property
    def share(self) -> float:
        return self.hits / self.scans if self.scans else float("nan")


def attention_hits(attention: str | Path, predictions: str | Path, lesions: str | Path, *, set_name: str = "deploy",
                   tolerance: int = 1) -> Localization:
    top: dict[str, tuple[float, int]] = {}
    with open(attention, newline="") as fh:
        for r in csv.DictReader(fh):
            a, s = float(r["attention"]), int(r["slice_index"])
            if r["scan_id"] not in top or a > top[r["scan_id"]][0]:
                top[r["scan_id"]] = (a, s)
    scores: dict[str, dict[str, float]] = {}
    positive: set[str] = set()
    with open(predictions, newline="") as fh:
        for r in csv.DictReader(fh):
            if r["set"] != set_name:
                continue
            scores.setdefault(r["scan_id"], {})[r["target"]] = float(r["probability"])
            if float(r["label"]) == 1:
                positive.add(r["scan_id"])
    extents: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for box in read_lesions_table(lesions):
        extents.setdefault((box.scan_id, box.label), []).append(box.extent)
    hits = scans = 0
    for scan_id in sorted(positive & set(top) & set(scores)):
        predicted = max(scores[scan_id], key=scores[scan_id].__getitem__)
        slice_index = top[scan_id][1]
        scans += 1
        hits += any(first - tolerance <= slice_index <= last + tolerance
                    for first, last in extents.get((scan_id, predicted), []))
    return Localization(hits, scans)

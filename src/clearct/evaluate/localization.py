"""Does attention point at the lesion, and does a heatmap point at it inside the slice?

**Attention hit share**: the share of positive scans whose most attended slice lies on (or within ``tolerance``
slices of) a lesion of the location the model predicts most strongly.

Inputs are what the stages write: ``attention.csv`` (scan_id, slice_index, window, attention; one row per instance),
``predictions.csv`` (scan_id, target, probability, label) of the same models on the same scans, and the cohort's
``lesions.csv`` (a lesion covers ``slice_first..slice_last`` where the table has them, else its key slice).
A scan is positive when any target's label is 1; its predicted location is the target with the highest score; its
top slice is the slice of the instance with the highest attention (any window).

**Pointing game** (Zhang et al. 2016, for heatmaps): the share of (top-attended) lesion slices whose heatmap
maximum falls inside the lesion's box grown by half its size (1.5 × its width and height about the same centre),
the tolerance that lets a map of the encoder's coarse grid count when its peak cell covers the lesion.
:func:`heatmap_pointing` scores the heatmap files a stage wrote (``attention --heatmaps``), per lesion location.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clearct.io.heatmaps import read_heatmaps
from clearct.io.tables import LesionBox, read_lesions_table

# x1, y1, x2, y2 (x along columns, y along rows) on pixel edges: pixel (r, c) covers [c, c + 1) × [r, r + 1), so
# a box (x1, y1, x2, y2) of whole pixels covers columns x1 … x2 − 1 (as clearct synth writes them)
Box = tuple[float, float, float, float]


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


@dataclass(frozen=True)
class Pointing:
    hits: int
    slices: int  # lesion slices with a heatmap

    @property
    def share(self) -> float:
        return self.hits / self.slices if self.slices else float("nan")


def grow_box(box: Box, grow: float = 0.5) -> Box:
    """``box`` enlarged by ``grow`` times its width and height, centre kept (half of it on each side)."""
    x1, y1, x2, y2 = box
    dx, dy = grow * (x2 - x1) / 2, grow * (y2 - y1) / 2
    return x1 - dx, y1 - dy, x2 + dx, y2 + dy


def peak(heatmap: np.ndarray) -> tuple[float, float] | None:
    """(row, column) of the maximum of ``heatmap`` (H, W): the centre of the pixels that reach it, so a flat top (a
    map upsampled from a coarse grid is flat from its edge cells to the border) counts at its middle, not at its
    first pixel. None for a map without any positive value (it points nowhere)."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if not np.isfinite(heatmap).all() or heatmap.max() <= 0:
        return None
    rows, cols = np.nonzero(heatmap == heatmap.max())
    return float(rows.mean()), float(cols.mean())


def peak_in_box(heatmap: np.ndarray, box: Box, grow: float = 0.5) -> bool:
    """Whether the :func:`peak` of ``heatmap`` lies in ``box`` grown by ``grow``; a map without a peak is a miss.
    The peak is a pixel index, the box on pixel edges (:data:`Box`): the peak's pixel centre is index + 0.5."""
    at = peak(heatmap)
    if at is None:
        return False
    x1, y1, x2, y2 = grow_box(box, grow)
    return bool(x1 <= at[1] + 0.5 <= x2 and y1 <= at[0] + 0.5 <= y2)


def pointing_game(pairs: Iterable[tuple[np.ndarray, Box]], grow: float = 0.5) -> Pointing:
    """Pointing-game score over (heatmap, lesion box) pairs."""
    results = [peak_in_box(m, b, grow) for m, b in pairs]
    return Pointing(sum(results), len(results))


def lesion_on_slice(boxes: Iterable[LesionBox], slice_index: int) -> LesionBox | None:
    """The lesion whose slice extent covers ``slice_index`` (the one whose key slice is nearest when several do);
    its box is the key slice's, the best estimate lesions.csv gives for the slices around it."""
    covering = [b for b in boxes if b.extent[0] <= slice_index <= b.extent[1]]
    return min(covering, key=lambda b: abs(b.slice_index - slice_index)) if covering else None


def lesion_pairs(maps: np.ndarray, slice_index: Iterable[int], targets: list[str],
                 boxes: Iterable[LesionBox]) -> list[tuple[str, np.ndarray, Box]]:
    """(location, map, box) for every instance of one scan that lies on a lesion slice: ``maps`` (K, T, H, W) of the
    K instances at ``slice_index``, the map of the lesion's own location target; lesions of a location that is not
    a target are left out."""
    boxes = list(boxes)
    pairs = []
    for k, s in enumerate(slice_index):
        lesion = lesion_on_slice(boxes, int(s))
        if lesion is not None and lesion.label in targets:
            pairs.append((lesion.label, maps[k, targets.index(lesion.label)],
                          (lesion.x1, lesion.y1, lesion.x2, lesion.y2)))
    return pairs


@dataclass(frozen=True)
class HeatmapPointing:
    """The pointing game over a folder of heatmap files: per lesion location and in all."""

    scans: int  # annotated scans with a heatmap file
    instances: int  # their instances with maps (the top attended)
    by_target: dict[str, Pointing]

    @property
    def total(self) -> Pointing:
        return Pointing(sum(p.hits for p in self.by_target.values()), sum(p.slices for p in self.by_target.values()))


def heatmap_pointing(folder: str | Path, lesions: str | Path, grow: float = 0.5) -> HeatmapPointing:
    """The pointing game of every ``<scan_id>.h5`` in ``folder`` (the top attended instances of each scan) against
    the boxes of ``lesions``: the instances on a lesion slice, each scored with the map of the lesion's location."""
    boxes: dict[str, list[LesionBox]] = {}
    for box in read_lesions_table(lesions):
        boxes.setdefault(box.scan_id, []).append(box)
    scans = instances = 0
    results: dict[str, list[bool]] = {}
    for path in sorted(Path(folder).glob("*.h5")):
        h = read_heatmaps(path)
        if h.scan_id not in boxes:
            continue
        scans += 1
        instances += len(h)
        for label, heatmap, lesion_box in lesion_pairs(h.maps, h.slice_index, h.targets, boxes[h.scan_id]):
            results.setdefault(label, []).append(peak_in_box(heatmap, lesion_box, grow))
    return HeatmapPointing(scans, instances, {t: Pointing(sum(r), len(r)) for t, r in sorted(results.items())})

"""DeepLesion → scans.csv (one scan per series folder), lesions.csv (every key-slice box), labels.csv (per scan)
and labels_patient.csv (per patient): the 8 coarse lesion locations of Task 1.

Layout (NIH Clinical Center release): ``ROOT/DL_info.csv`` (one row per lesion) and
``ROOT/Images_png/<Patient_index>_<Study_index>_<Series_ID>/<NNN>.png`` (16-bit, HU = value − 32768). The folders
hold sub-volumes around the key slices, so the file numbers need not be contiguous.

Slice order: :mod:`clearct.io.png` stacks a folder's PNGs by file number (DeepLesion records no patient
positions), so the key slice ``Key_slice_index`` = file number N maps to the position of N among the folder's
numbers, and the volume's slice axis follows the file numbers. Boxes are (x1, y1, x2, y2) pixels of the slice as
stored; the PNG reader keeps rows and columns as stored, so they carry over unchanged.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from clearct.common.errors import ClearctError
from clearct.importers.common import (
    LESION_COLUMNS,
    ImportResult,
    Table,
    load_mapping,
    not_this_dataset,
    one_or_mixed,
    per_patient,
    prevalence,
    read_csv,
)
from clearct.importers.registry import register_importer
from clearct.io.png import slice_files

LOCATIONS = ("bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft_tissue", "pelvis")
# Coarse_lesion_type → location column (DeepLesion README); −1 (no type; the training split's lesions) is unlabelled
DEFAULT_MAPPING: dict[str, Any] = {
    "lesion_types": {i + 1: name for i, name in enumerate(LOCATIONS)},
    "splits": {1: "train", 2: "val", 3: "test"},  # Train_Val_Test
}
UNLABELLED = "unlabelled"
REQUIRED = ("File_name", "Key_slice_index", "Bounding_boxes", "Coarse_lesion_type")
_FILE_NAME = re.compile(r"^(\d+_\d+_\d+)_(\d+)\.png$", re.IGNORECASE)


def _int_keys(mapping: dict, what: str, path: Path | None) -> dict[int, str]:
    try:
        return {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError) as exc:
        raise ClearctError(f"{what}: keys must be integer codes ({exc})", path) from exc


def _box(text: str) -> tuple[float, float, float, float] | None:
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        return None
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 and min(x1, y1) >= 0 else None


def _split_name(value: str, splits: dict[int, str]) -> str:
    try:
        return splits.get(int(float(value)), value.strip())
    except ValueError:
        return value.strip()


def _slice_size(png: Path, folder: str, result: ImportResult) -> tuple[int, int] | None:
    """(width, height) of a key slice, or None after listing the series as a failure (a broken PNG)."""
    try:
        with Image.open(png) as img:
            return img.size
    except Exception as exc:  # PIL raises many types for a damaged file
        result.failures.add(folder, png, f"{png}: not a readable PNG ({type(exc).__name__}: {exc})")
        return None


@register_importer("deeplesion")
def import_deeplesion(root: Path | str, *, mapping: Path | None = None, unlabelled: str = "drop") -> ImportResult:
    """Read DeepLesion at ``root``. ``unlabelled``: ``drop`` (default) leaves scans with an untyped lesion (and
    their patients) out of the label tables, since their locations are unknown, not negative; ``flag`` keeps them
    with ``has_unlabelled`` = 1 and the locations of the typed lesions only. scans.csv and lesions.csv keep every
    scan and valid box either way (label ``unlabelled``), for pretraining."""
    root = Path(root)
    info, images = root / "DL_info.csv", root / "Images_png"
    if not (info.is_file() and images.is_dir()):
        raise not_this_dataset(root, "DeepLesion", "DL_info.csv and Images_png/<patient>_<study>_<series>/NNN.png")
    header, rows = read_csv(info)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ClearctError(f"not DeepLesion's DL_info table: no column(s) {', '.join(missing)}", info)
    cfg = load_mapping(mapping, DEFAULT_MAPPING)
    types = _int_keys(cfg["lesion_types"], "lesion_types", mapping)
    unknown = sorted(set(types.values()) - set(LOCATIONS))
    if unknown:
        raise ClearctError(f"lesion_types maps to unknown location(s) {', '.join(unknown)}; use {', '.join(LOCATIONS)}",
                           mapping)
    splits = _int_keys(cfg["splits"], "splits", mapping)

    result = ImportResult("deeplesion")
    by_folder: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        m = _FILE_NAME.match(row["File_name"])
        if m is None:
            result.drop("DL_info rows with a File_name not like 000001_01_01_103.png", examples=[row["File_name"]])
            continue
        by_folder[m.group(1)].append(row)

    lesions: list[dict[str, Any]] = []
    scan_labels: list[dict[str, Any]] = []
    for folder in tqdm(sorted(by_folder), desc="deeplesion", unit="series", leave=False):
        path = images / folder
        numbers = [n for n, _ in slice_files(path)] if path.is_dir() else []
        if not numbers:
            result.drop("lesions of series without a PNG folder", len(by_folder[folder]), examples=[folder])
            continue
        index = {n: i for i, n in enumerate(numbers)}
        size = None
        found: set[str] = set()
        split_values: set[str] = set()
        n_unlabelled = n_kept = 0
        unreadable = False
        for row in by_folder[folder]:
            key = row["Key_slice_index"].strip()
            box = _box(row["Bounding_boxes"])
            if not key.isdigit() or int(key) not in index:
                result.drop("lesions whose key-slice PNG is not in the folder", examples=[f"{folder}/{key}"])
                continue
            if box is None:
                result.drop("lesions with an invalid box", examples=[f"{folder}/{key}"])
                continue
            if size is None:
                size = _slice_size(path / f"{int(key):03d}.png", folder, result)  # one size per folder
                if size is None:
                    unreadable = True
                    break
            if box[2] > size[0] or box[3] > size[1]:
                result.drop("lesions with a box outside the slice", examples=[f"{folder}/{key}"])
                continue
            try:
                code = int(float(row["Coarse_lesion_type"]))
            except ValueError:
                code = -1
            label = types.get(code, UNLABELLED)
            n_unlabelled += label == UNLABELLED
            n_kept += 1
            found.add(label)
            split_values.add(_split_name(row.get("Train_Val_Test", ""), splits))
            lesions.append({"scan_id": folder, "slice_index": index[int(key)], "x1": box[0], "y1": box[1],
                            "x2": box[2], "y2": box[3], "label": label})
        if unreadable:
            continue  # listed as a failure, neither a scan nor a label row
        result.scans.append((folder, folder.split("_")[0], path))
        if not n_kept:  # every DeepLesion series has a lesion: all-zero locations would be false negatives
            result.drop("label rows of scans without a usable lesion", examples=[folder])
            continue
        scan_labels.append({"scan_id": folder, "patient_id": folder.split("_")[0],
                            **{loc: int(loc in found) for loc in LOCATIONS},
                            "has_unlabelled": int(n_unlabelled > 0), "n_lesions": n_kept,
                            "n_unlabelled": n_unlabelled, "split": one_or_mixed(split_values)})
    on_disk = {p.name for p in images.iterdir() if p.is_dir()}
    if on_disk - set(by_folder):
        result.drop("PNG folders without a DL_info row (no spacing, no boxes)", len(on_disk - set(by_folder)),
                    examples=sorted(on_disk - set(by_folder)))

    if unlabelled == "drop":
        flagged = {r["patient_id"] for r in scan_labels if r["has_unlabelled"]}
        kept = [r for r in scan_labels if r["patient_id"] not in flagged]
        result.drop("label rows of scans with unlabelled lesions (or their patients' other scans)",
                    len(scan_labels) - len(kept))
        scan_labels = kept
    elif unlabelled != "flag":
        raise ClearctError(f"unlabelled must be flag or drop, not {unlabelled!r}")
    patient_labels = per_patient(scan_labels, any_of=[*LOCATIONS, "has_unlabelled"],
                                 sum_of=("n_lesions", "n_unlabelled"))
    columns = [*LOCATIONS, "has_unlabelled", "n_lesions", "n_unlabelled", "split"]
    result.tables["labels.csv"] = Table(["scan_id", *columns], [
        {k: v for k, v in r.items() if k != "patient_id"} for r in scan_labels])
    result.tables["labels_patient.csv"] = Table(["patient_id", "n_scans", *columns], patient_labels)
    result.tables["lesions.csv"] = Table(LESION_COLUMNS, lesions)
    result.prevalence = {"labels.csv": prevalence(scan_labels, [*LOCATIONS, "has_unlabelled"]),
                         "labels_patient.csv": prevalence(patient_labels, [*LOCATIONS, "has_unlabelled"])}
    result.notes.append(f"{sum(r['label'] == UNLABELLED for r in lesions)} of {len(lesions)} boxes have no lesion "
                        "type (Coarse_lesion_type −1); their scans carry has_unlabelled = 1")
    return result


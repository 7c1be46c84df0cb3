"""RAD-ChestCT → scans.csv (one .npz volume per row), labels.csv (per volume) and labels_patient.csv (per patient):
the 8 lung abnormalities of Task 2, each the OR over the locations of its source abnormalities.

Layout (Zenodo record 6406114, Draelos et al. 2021): volumes ``<NoteAcc_DEID>.npz`` (key ``ct``: HU, slices
first) anywhere below ROOT, label tables ``img{train,valid,test}_Abnormality_and_Location_Labels.csv`` with a
``NoteAcc_DEID`` column and one 0/1 column per ``<abnormality>*<location>``, and optionally
``CT_Scan_Metadata_Complete_35747.csv`` (any table with ``NoteAcc_DEID`` and ``MRN_DEID``) for patient ids.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clearct.common.errors import ClearctError
from clearct.importers.common import (
    ImportResult,
    Table,
    csv_header,
    load_mapping,
    not_this_dataset,
    per_patient,
    prevalence,
    read_csv,
)
from clearct.importers.registry import register_importer

TARGETS = ("emphysema", "bronchiectasis", "effusion", "atelectasis", "fibrosis", "opacity", "calcification", "nodule")
# target column → RAD-ChestCT abnormality names whose <abnormality>*<location> columns are OR-ed (every location
# unless a target is given as {abnormalities: [...], locations: [...]}); the one table of docs/datasets.md
DEFAULT_MAPPING: dict[str, Any] = {"targets": {
    "emphysema": ["emphysema"],
    "bronchiectasis": ["bronchiectasis"],
    "effusion": ["pleural_effusion"],
    "atelectasis": ["atelectasis"],
    "fibrosis": ["fibrosis"],
    "opacity": ["opacity"],
    "calcification": ["calcification"],
    "nodule": ["nodule"],
}}
ID, PATIENT = "NoteAcc_DEID", "MRN_DEID"
_LABEL_FILE = re.compile(r"^img(train|valid|test)_Abnormality_and_Location_Labels\.csv$")
_SPLITS = {"train": "train", "valid": "val", "test": "test"}


def _targets(cfg: dict[str, Any], mapping: Path | None) -> dict[str, tuple[set[str], set[str] | None]]:
    """target → (source abnormalities, allowed locations or None for all)."""
    out: dict[str, tuple[set[str], set[str] | None]] = {}
    for target, spec in (cfg["targets"] or {}).items():
        if isinstance(spec, str):
            spec = [spec]
        if isinstance(spec, list):
            out[str(target)] = ({str(s) for s in spec}, None)
        elif isinstance(spec, dict) and "abnormalities" in spec and set(spec) <= {"abnormalities", "locations"}:
            locs = spec.get("locations")
            out[str(target)] = ({str(s) for s in spec["abnormalities"]}, {str(x) for x in locs} if locs else None)
        else:
            raise ClearctError(f"target {target!r}: give a list of abnormalities or "
                               "{abnormalities: [...], locations: [...]}", mapping)
    if not out:
        raise ClearctError("the mapping defines no targets", mapping)
    return out


def _label_files(root: Path) -> list[tuple[str, Path]]:
    found = []
    for p in sorted(root.rglob("img*_Abnormality_and_Location_Labels.csv")):
        if m := _LABEL_FILE.match(p.name):
            found.append((_SPLITS[m.group(1)], p))
    return found


def _patients(root: Path, result: ImportResult) -> dict[str, str]:
    """NoteAcc_DEID → MRN_DEID from the first table under ROOT that has both columns."""
    for path in sorted(root.rglob("*.csv")):
        header = csv_header(path)
        if ID in header and PATIENT in header:
            _, rows = read_csv(path)
            result.notes.append(f"patient ids ({PATIENT}) from {path.name}")
            return {r[ID]: r[PATIENT] for r in rows if r.get(ID) and r.get(PATIENT)}
    result.notes.append(f"no table with {ID} and {PATIENT} under ROOT: every volume counted as its own patient")
    return {}


def _is_positive(value: str) -> bool:
    try:
        return float(value) > 0
    except ValueError:
        return False


@register_importer("radchestct")
def import_radchestct(root: Path | str, *, mapping: Path | None = None) -> ImportResult:
    """Read RAD-ChestCT at ``root`` (see the module docstring for the layout)."""
    root = Path(root)
    label_files = _label_files(root) if root.is_dir() else []
    if not label_files:
        raise not_this_dataset(root, "RAD-ChestCT",
                               "img{train,valid,test}_Abnormality_and_Location_Labels.csv and <NoteAcc_DEID>.npz volumes")
    targets = _targets(load_mapping(mapping, DEFAULT_MAPPING), mapping)
    volumes: dict[str, Path] = {}
    for p in sorted(root.rglob("*.npz")):
        if p.stem in volumes:
            raise ClearctError(f"two volumes named {p.name}: {volumes[p.stem]} and {p}", root)
        volumes[p.stem] = p
    if not volumes:
        raise not_this_dataset(root, "RAD-ChestCT", "<NoteAcc_DEID>.npz volumes below ROOT (none found)")
    result = ImportResult("radchestct")
    patients = _patients(root, result)

    scan_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for split, path in label_files:
        header, rows = read_csv(path)
        if ID not in header:
            raise ClearctError(f"not a RAD-ChestCT label table: no {ID} column", path)
        parsed = [(c, *c.split("*", 1)) if "*" in c else (c, c, "") for c in header if c != ID]
        columns: dict[str, list[str]] = {}
        for target, (abnormalities, locations) in targets.items():
            columns[target] = [c for c, abn, loc in parsed if abn in abnormalities and (locations is None or loc in locations)]
            if not columns[target]:
                raise ClearctError(f"no <abnormality>*<location> column for target {target} "
                                   f"(abnormalities {', '.join(sorted(abnormalities))}); check the mapping", path)
        for row in tqdm(rows, desc=f"radchestct {path.name}", unit="volume", leave=False):
            scan_id = row[ID]
            if scan_id not in volumes:
                result.drop("label rows without a .npz volume under ROOT")
                continue
            if scan_id in seen:
                result.drop("label rows repeated in another label table")
                continue
            seen.add(scan_id)
            pid = patients.get(scan_id, scan_id)
            result.scans.append((scan_id, pid, volumes[scan_id]))
            labels = {t: int(any(_is_positive(row[c]) for c in cols)) for t, cols in columns.items()}
            scan_rows.append({"scan_id": scan_id, "patient_id": pid, **labels, "split": split})
    unlabelled = sorted(set(volumes) - seen)
    if unlabelled:
        result.drop("volumes without a label row", len(unlabelled))
    if patients and any(r["patient_id"] == r["scan_id"] for r in scan_rows):
        result.notes.append(f"{sum(r['patient_id'] == r['scan_id'] for r in scan_rows)} volume(s) missing from the "
                            "patient table: counted as their own patients")

    names = list(targets)
    patient_rows = per_patient(scan_rows, any_of=names)
    result.tables["labels.csv"] = Table(["scan_id", *names, "split"], [
        {k: v for k, v in r.items() if k != "patient_id"} for r in scan_rows])
    result.tables["labels_patient.csv"] = Table(["patient_id", "n_scans", *names, "split"], patient_rows)
    result.prevalence = {"labels.csv": prevalence(scan_rows, names),
                         "labels_patient.csv": prevalence(patient_rows, names)}
    return result

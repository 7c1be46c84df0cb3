"""NSCLC-Radiomics (TCIA, "Lung1") → scans.csv (the CT series of each patient) and labels.csv (per patient):
``stage_high`` (III/IV vs I/II, Task 3), the raw stages and the survival columns.

Layout: DICOM series folders ``LUNG1-xxx/<study>/<series>/*.dcm`` (CT, RTSTRUCT and SEG series side by side;
ROOT may also be the folder above ``NSCLC-Radiomics/``) and the clinical table, e.g.
``NSCLC-Radiomics-Lung1.clinical-version3-Oct-2019.csv`` with ``PatientID, clinical.T.Stage, Clinical.N.Stage,
Clinical.M.Stage, Overall.Stage, Histology, Survival.time, deadstatus.event``. A series is CT when one of its
files has Modality CT; RTSTRUCT and SEG series are never listed as scans.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from clearct.common.errors import ClearctError
from clearct.importers.common import (
    ImportResult,
    Table,
    csv_header,
    load_mapping,
    not_this_dataset,
    prevalence,
    read_csv,
)
from clearct.importers.registry import register_importer

DEFAULT_MAPPING: dict[str, Any] = {
    "columns": {  # labels.csv-side name → clinical CSV column
        "patient_id": "PatientID",
        "stage": "Overall.Stage",
        "t_stage": "clinical.T.Stage",
        "n_stage": "Clinical.N.Stage",
        "m_stage": "Clinical.M.Stage",
        "histology": "Histology",
        "survival_days": "Survival.time",
        "event": "deadstatus.event",
    },
    "high_stages": ["III", "IV"],  # stage groups counted as stage_high = 1
}
LABEL_COLUMNS = ["patient_id", "stage_high", "stage_group", "has_stage", "stage", "t_stage", "n_stage", "m_stage",
                 "histology", "survival_days", "event"]
_STAGE = re.compile(r"^(?:stage\s*)?(IV|III|II|I)\s*[ABC]?\d?$", re.IGNORECASE)
_MISSING = {"", "na", "nan", "n/a", "none", "unknown"}


def stage_group(raw: str) -> str:
    """'IIIa', 'IIIb', 'Stage IV', 'I' … → 'III', 'IV', 'I'; '' when missing or not a stage."""
    m = _STAGE.match(raw.strip())
    return m.group(1).upper() if m else ""


def _first_modality(folder: Path, files: list[str]) -> tuple[str, str, str]:
    """(modality, PatientID, SeriesInstanceUID) of a folder's series: CT as soon as one file is CT, else the most
    common modality ('' when no file is DICOM)."""
    seen: Counter = Counter()
    patient = ""
    for name in sorted(files):
        try:
            ds = pydicom.dcmread(folder / name, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, AttributeError):
            continue
        modality = str(ds.get("Modality", "") or "unknown")
        patient = patient or str(ds.get("PatientID", "") or "")
        seen[modality] += 1
        if modality == "CT":
            return "CT", patient, str(ds.get("SeriesInstanceUID", "") or "")
    return (seen.most_common(1)[0][0] if seen else ""), patient, ""


def find_series(root: Path) -> tuple[list[tuple[str, Path, str]], Counter]:
    """(PatientID, folder, SeriesInstanceUID) of every CT series below ``root`` and the number of non-CT series
    per modality."""
    ct: list[tuple[str, Path, str]] = []
    other: Counter = Counter()
    walk = sorted((Path(d), [f for f in fs if not f.startswith(".")]) for d, _, fs in os.walk(root))
    for folder, files in tqdm(walk, desc="nsclc series", unit="folder", leave=False):
        if not files:
            continue
        modality, patient, uid = _first_modality(folder, files)
        if modality == "CT":
            ct.append((patient or folder.relative_to(root).parts[0], folder, uid))
        elif modality:
            other[modality] += 1
    return ct, other


def _clinical_table(root: Path, clinical: Path | None, cols: dict[str, str]) -> Path | None:
    if clinical is not None:
        return Path(clinical)
    needed = {cols["patient_id"], cols["stage"]}
    return next((p for p in sorted(root.rglob("*.csv")) if needed <= set(csv_header(p))), None)


def _number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if x == x else None  # NaN → None


@register_importer("nsclc")
def import_nsclc(root: Path | str, *, mapping: Path | None = None, clinical: Path | None = None) -> ImportResult:
    """Read NSCLC-Radiomics at ``root``; ``clinical`` names the clinical CSV when it is not below ROOT."""
    root = Path(root)
    cfg = load_mapping(mapping, DEFAULT_MAPPING)
    cols = {**DEFAULT_MAPPING["columns"], **(cfg["columns"] or {})}
    unknown = sorted(set(cols) - set(DEFAULT_MAPPING["columns"]))
    if unknown:
        raise ClearctError(f"unknown column key(s) {', '.join(unknown)} in columns", mapping)
    high = {str(s).upper() for s in cfg["high_stages"]}
    expected = (f"LUNG1-xxx/<study>/<series>/ DICOM folders and a clinical CSV with columns {cols['patient_id']}, "
                f"{cols['stage']} …")
    table = _clinical_table(root, clinical, cols) if root.is_dir() else None
    if table is None:
        raise not_this_dataset(root, "NSCLC-Radiomics", expected)
    header, rows = read_csv(table)
    missing = [c for c in cols.values() if c not in header]
    if missing:
        raise ClearctError(f"clinical table lacks column(s) {', '.join(missing)} (header: {', '.join(header)})", table)
    series, other = find_series(root)
    if not series:
        found = ", ".join(f"{m} ×{n}" for m, n in other.items()) or "no DICOM files"
        raise not_this_dataset(root, "NSCLC-Radiomics", f"{expected} (no CT series below ROOT; {found})")

    result = ImportResult("nsclc")
    by_patient: dict[str, list[tuple[Path, str]]] = {}
    for pid, folder, uid in series:
        by_patient.setdefault(pid, []).append((folder, uid))
    for pid, folders in sorted(by_patient.items()):
        for k, (folder, uid) in enumerate(folders, 1):
            scan_id = pid if len(folders) == 1 else f"{pid}_{k}"
            result.scans.append((scan_id, pid, folder))
            if uid:  # the series' UID: read that series even where a folder holds others (an RTSTRUCT's CT copy …)
                result.series[scan_id] = uid
    for modality, n in sorted(other.items()):
        result.notes.append(f"{n} {modality} series not listed as scans")
    if any(len(f) > 1 for f in by_patient.values()):
        result.notes.append(f"{sum(len(f) > 1 for f in by_patient.values())} patient(s) with several CT series")

    labels: list[dict[str, Any]] = []
    clinical_ids: set[str] = set()
    for row in rows:
        pid = row[cols["patient_id"]]
        if pid in clinical_ids:
            result.drop("repeated clinical rows")
            continue
        clinical_ids.add(pid)
        if pid not in by_patient:
            result.drop("clinical rows without a CT series")
            continue
        raw = "" if row[cols["stage"]].lower() in _MISSING else row[cols["stage"]]
        group = stage_group(raw)
        if raw and not group:
            result.notes.append(f"{pid}: stage {raw!r} not understood (stage_high left empty)")
        time, event = _number(row[cols["survival_days"]]), _number(row[cols["event"]])
        survival: dict[str, Any] = {"survival_days": "", "event": ""}
        if time is not None and time >= 0 and event in (0.0, 1.0):
            survival = {"survival_days": f"{time:g}", "event": int(event)}
        labels.append({
            "patient_id": pid, "stage_high": int(group in high) if group else "", "stage_group": group,
            "has_stage": int(bool(group)), "stage": raw,
            **{k: "" if row[cols[k]].lower() in _MISSING else row[cols[k]] for k in ("t_stage", "n_stage", "m_stage",
                                                                                       "histology")},
            **survival,
        })
    no_clinical = sorted(set(by_patient) - clinical_ids)
    if no_clinical:
        result.drop("CT patients without a clinical row (scans listed, no labels)", len(no_clinical))
    n_stage = sum(r["has_stage"] for r in labels)
    result.notes.append(f"{len(labels) - n_stage} patient(s) without a stage (has_stage = 0, stage_high empty)")
    n_surv = sum(r["event"] != "" for r in labels)
    if n_surv < len(labels):
        result.notes.append(f"{len(labels) - n_surv} patient(s) without survival time/event (left empty)")
    result.tables["labels.csv"] = Table(LABEL_COLUMNS, labels)
    result.prevalence = {"labels.csv": prevalence(labels, ["stage_high", "has_stage", "event"])}
    result.notes.append(f"clinical table: {table}")
    return result

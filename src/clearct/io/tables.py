"""Cohort tables (docs/design.md, "Data contracts"): scans.csv, labels.csv, lesions.csv, read and validated.

Relative paths in scans.csv are relative to the CSV's folder. Every problem is reported as one ClearctError
that names the file and the offending rows.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from clearct.common.errors import ClearctError


@dataclass(frozen=True)
class ScanRecord:
    scan_id: str
    patient_id: str
    path: Path  # resolved, absolute
    series: str | None = None  # the series_uid column: which series of a DICOM folder (clearct.io.series)


@dataclass(frozen=True)
class LesionBox:
    scan_id: str
    slice_index: int
    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    # the lesion's slice extent (inclusive) where the table gives it; None → only the key slice is known
    slice_first: int | None = None
    slice_last: int | None = None

    @property
    def extent(self) -> tuple[int, int]:
        """First and last slice (inclusive) the lesion covers; the key slice alone when the table has no extent."""
        first = self.slice_index if self.slice_first is None else self.slice_first
        last = self.slice_index if self.slice_last is None else self.slice_last
        return first, last


@dataclass
class LabelTable:
    """Rows of labels.csv keyed by ``id_column``: ``scan_id`` (labels per scan) or ``patient_id`` (labels per
    patient); values stay strings here, the task decides how to parse them. A per-scan table may also name each
    scan's patient (``patients``), which the join checks against the scan's own patient id."""

    id_column: str
    ids: list[str]
    columns: dict[str, list[str]]
    patients: list[str] | None = None

    @property
    def keyed(self) -> str:
        """How the rows are matched, in words (the commands print it)."""
        if self.id_column == "scan_id":
            return f"labels per scan: {len(self.ids)} rows matched by scan_id"
        return f"labels per patient: {len(self.ids)} rows matched by patient_id (every scan of a patient gets its row)"

    def column(self, name: str) -> list[str]:
        if name not in self.columns:
            raise KeyError(name)
        return self.columns[name]


def _read_rows(path: str | Path, required: tuple[str, ...]) -> tuple[list[str], list[dict[str, str]]]:
    path = Path(path)
    if not path.is_file():
        raise ClearctError("table not found", path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    missing = [c for c in required if c not in header]
    if missing:
        raise ClearctError(f"missing column(s) {', '.join(missing)} (header: {', '.join(header) or 'empty'})", path)
    return header, rows


def _rows_where(rows: list[dict[str, str]], bad: list[int], limit: int = 8) -> str:
    shown = ", ".join(str(i + 2) for i in bad[:limit])  # +2: header is line 1
    return shown + (f" and {len(bad) - limit} more" if len(bad) > limit else "")


def read_scans_table(path: str | Path, *, check_exists: bool = False) -> list[ScanRecord]:
    """Read ``scans.csv`` (scan_id, patient_id, path [, series_uid]); duplicate ids and empty fields are errors.

    The optional ``series_uid`` column picks one series of a DICOM folder that holds several: a
    SeriesInstanceUID, ``number:N`` or ``index:K`` (:mod:`clearct.io.series`); an empty cell applies the default
    rule.

    A scan path that does not exist is not an error of the table: batch commands report it for that scan (the
    reader names the file) and go on with the rest. ``check_exists=True`` makes it one for callers that need
    every file up front.
    """
    path = Path(path)
    _, rows = _read_rows(path, ("scan_id", "patient_id", "path"))
    if not rows:
        raise ClearctError("the table lists no scans (only a header)", path)
    empty = [i for i, r in enumerate(rows) if not (r["scan_id"] and r["patient_id"] and r["path"])]
    if empty:
        raise ClearctError(f"empty scan_id, patient_id or path on line(s) {_rows_where(rows, empty)}", path)
    seen: dict[str, int] = {}
    dupes = []
    for i, r in enumerate(rows):
        if r["scan_id"] in seen:
            dupes.append(i)
        seen.setdefault(r["scan_id"], i)
    if dupes:
        names = sorted({rows[i]["scan_id"] for i in dupes})
        raise ClearctError(f"duplicate scan_id {', '.join(names[:5])} on line(s) {_rows_where(rows, dupes)}", path)
    base = path.resolve().parent
    records = [ScanRecord(r["scan_id"], r["patient_id"], (base / r["path"]).resolve(), r.get("series_uid") or None)
               for r in rows]
    if check_exists:
        missing = [i for i, rec in enumerate(records) if not rec.path.exists()]
        if missing:
            first = records[missing[0]].path
            raise ClearctError(
                f"{len(missing)} scan path(s) do not exist, line(s) {_rows_where(rows, missing)} (first: {first})", path
            )
    return records


def table_path(path: Path, out: Path, absolute: bool = False) -> str:
    """A table's path column: relative to the CSV's folder (``out``) unless ``absolute``."""
    path = Path(path).resolve()
    if absolute:
        return str(path)
    try:
        return os.path.relpath(path, Path(out).resolve())
    except ValueError:  # another drive (Windows): only an absolute path can point there
        return str(path)


def _optional_int(value: str | None) -> int | None:
    return None if value is None or value.strip() == "" else int(value)


def read_lesions_table(path: str | Path) -> list[LesionBox]:
    """Read ``lesions.csv`` (scan_id, slice_index, x1, y1, x2, y2, label [, slice_first, slice_last]).

    The extent columns are optional (DeepLesion's tables have only the key slice); where present they must
    bracket the key slice.
    """
    path = Path(path)
    _, rows = _read_rows(path, ("scan_id", "slice_index", "x1", "y1", "x2", "y2", "label"))
    boxes, bad = [], []
    for i, r in enumerate(rows):
        try:
            x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
            box = LesionBox(
                r["scan_id"], int(r["slice_index"]), x1, y1, x2, y2, r["label"],
                _optional_int(r.get("slice_first")), _optional_int(r.get("slice_last")),
            )
        except ValueError:
            bad.append(i)
            continue
        first, last = box.extent
        if (not r["scan_id"] or box.x2 <= box.x1 or box.y2 <= box.y1 or box.slice_index < 0
                or not 0 <= first <= box.slice_index <= last):
            bad.append(i)
            continue
        boxes.append(box)
    if bad:
        raise ClearctError(f"invalid lesion box on line(s) {_rows_where(rows, bad)} "
                           "(need x2>x1, y2>y1, slice≥0, slice_first ≤ slice_index ≤ slice_last)", path)
    return boxes


def read_labels_table(path: str | Path) -> LabelTable:
    """Read ``labels.csv``: labels per scan when it has a ``scan_id`` column (a ``patient_id`` column beside it
    names each scan's patient), else labels per patient (``patient_id``); every other column is a target."""
    path = Path(path)
    header, rows = _read_rows(path, ())
    if "scan_id" not in header and "patient_id" not in header:
        raise ClearctError("a labels table needs a patient_id or scan_id column (patient_id: labels per patient; "
                           f"scan_id: labels per scan); header: {', '.join(header) or 'empty'}", path)
    id_column = "scan_id" if "scan_id" in header else "patient_id"
    ids = [r[id_column] for r in rows]
    empty = [i for i, v in enumerate(ids) if not v]
    if empty:
        raise ClearctError(f"empty {id_column} on line(s) {_rows_where(rows, empty)}", path)
    counts = Counter(ids)
    dupes = [i for i, v in enumerate(ids) if counts[v] > 1]
    if dupes:
        names = ", ".join(sorted({ids[i] for i in dupes})[:5])
        why = ("a table with a scan_id column holds labels per scan, one row per scan" if id_column == "scan_id"
               else "without a scan_id column the labels are per patient, one row per patient; for labels per "
               "scan add a scan_id column")
        raise ClearctError(f"duplicate {id_column} {names} on line(s) {_rows_where(rows, dupes)}: {why}", path)
    patients = [r["patient_id"] for r in rows] if id_column == "scan_id" and "patient_id" in header else None
    columns = {c: [r.get(c, "") for r in rows] for c in header if c not in ("scan_id", "patient_id")}
    return LabelTable(id_column, ids, columns, patients)

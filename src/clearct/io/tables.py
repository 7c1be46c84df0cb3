"""Cohort tables (docs/design.md, "Data contracts"): scans.csv, labels.csv, lesions.csv, read and validated.

Relative paths in scans.csv are relative to the CSV's folder. Every problem is reported as one ClearctError
that names the file and the offending rows.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from clearct.common.errors import ClearctError


@dataclass(frozen=True)
class ScanRecord:
    scan_id: str
    patient_id: str
    path: Path  # resolved, absolute


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
    """Rows of labels.csv keyed by ``id_column`` (``patient_id`` or ``scan_id``); values stay strings here,
    the task decides how to parse them."""

    id_column: str
    ids: list[str]
    columns: dict[str, list[str]]

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
    """Read ``scans.csv`` (scan_id, patient_id, path); duplicate ids and empty fields are errors.

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
    records = [ScanRecord(r["scan_id"], r["patient_id"], (base / r["path"]).resolve()) for r in rows]
    if check_exists:
        missing = [i for i, rec in enumerate(records) if not rec.path.exists()]
        if missing:
            first = records[missing[0]].path
            raise ClearctError(
                f"{len(missing)} scan path(s) do not exist, line(s) {_rows_where(rows, missing)} (first: {first})", path
            )
    return records


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
    """Read ``labels.csv``: an id column (``patient_id`` preferred, else ``scan_id``) and one column per target."""
    path = Path(path)
    header, rows = _read_rows(path, ())
    id_column = "patient_id" if "patient_id" in header else "scan_id" if "scan_id" in header else None
    if id_column is None:
        raise ClearctError("labels table needs a patient_id or scan_id column", path)
    ids = [r[id_column] for r in rows]
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        raise ClearctError(f"duplicate {id_column} {', '.join(dupes[:5])}", path)
    columns = {c: [r.get(c, "") for r in rows] for c in header if c != id_column}
    return LabelTable(id_column, ids, columns)

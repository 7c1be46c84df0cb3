"""What every importer shares: the result it builds, the layout check, mapping files, table writing, the report.

An importer reads a dataset in its native layout and returns an :class:`ImportResult`; :func:`write_tables`
writes the cohort tables of docs/design.md ("Data contracts": ``scans.csv``, ``labels.csv`` …) atomically,
with scan paths relative to the output folder (or absolute), so the images are never copied.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError
from clearct.common.failures import Failures
from clearct.io.tables import table_path

SCAN_COLUMNS = ["scan_id", "patient_id", "path"]
EXAMPLES = 3  # ids named per reason in the import report
LESION_COLUMNS = ["scan_id", "slice_index", "x1", "y1", "x2", "y2", "label"]


@dataclass
class Table:
    """Rows of one output CSV with its column order."""

    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ImportResult:
    """What an importer found: scans (absolute paths), label and lesion tables, and the rows it left out."""

    dataset: str
    scans: list[tuple[str, str, Path]] = field(default_factory=list)  # (scan_id, patient_id, absolute path)
    series: dict[str, str] = field(default_factory=dict)  # scan_id → series_uid of a DICOM folder's series
    tables: dict[str, Table] = field(default_factory=dict)  # file name → table, e.g. "labels.csv"
    dropped: Counter = field(default_factory=Counter)  # "why" → number of rows left out
    examples: dict[str, list[str]] = field(default_factory=dict)  # "why" → the first ids left out for it
    notes: list[str] = field(default_factory=list)  # facts worth a line in the report
    prevalence: dict[str, dict[str, float]] = field(default_factory=dict)  # table → column → share of 1s
    failures: Failures = field(default_factory=lambda: Failures("import"))  # files that could not be read

    def drop(self, reason: str, n: int = 1, examples: Iterable[str] = ()) -> None:
        """Rows left out by the dataset's own rules (not failures); the first ids are named in the report."""
        self.dropped[reason] += n
        named = self.examples.setdefault(reason, [])
        named += [str(e) for e in list(examples)[: EXAMPLES - len(named)]]


def not_this_dataset(root: Path, dataset: str, expected: str) -> ClearctError:
    """The one-line refusal when ROOT does not look like ``dataset``, listing a little of what is there."""
    if not root.is_dir():
        return ClearctError(f"not a folder; expected the {dataset} folder ({expected})", root)
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    shown = ", ".join(entries[:6]) + (f" … ({len(entries)} entries)" if len(entries) > 6 else "")
    return ClearctError(f"does not look like {dataset}: expected {expected}; found {shown or 'an empty folder'}", root)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a CSV (BOM and surrounding spaces removed); ClearctError when unreadable."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [(h or "").strip() for h in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ClearctError(f"cannot read table: {exc}", path) from exc
    return header, rows


def csv_header(path: Path) -> list[str]:
    """The header row of a CSV without reading the rest (cheap on large metadata tables)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def load_mapping(path: Path | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` with the top-level keys of a YAML (or JSON) mapping file replaced; unknown keys are errors."""
    if path is None:
        return dict(defaults)
    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ClearctError(f"cannot read mapping file: {exc}", path) from exc
    if not isinstance(loaded, dict):
        raise ClearctError("a mapping file must hold a YAML mapping", path)
    unknown = sorted(set(map(str, loaded)) - set(defaults))
    if unknown:
        raise ClearctError(f"unknown key(s) {', '.join(unknown)}; this dataset's keys: {', '.join(defaults)}", path)
    return {**defaults, **loaded}


def prevalence(rows: list[dict[str, Any]], columns: list[str]) -> dict[str, float]:
    """Share of rows with value 1 per column (empty values not counted)."""
    out = {}
    for c in columns:
        values = [int(r[c]) for r in rows if r.get(c) not in (None, "")]
        out[c] = round(sum(values) / len(values), 4) if values else float("nan")
    return out


def one_or_mixed(values: set[str]) -> str:
    """The one value of a group (e.g. its split), ``mixed`` when they differ, empty when there is none."""
    values = {v for v in values if v}
    return values.pop() if len(values) == 1 else "mixed" if values else ""


def per_patient(rows: list[dict[str, Any]], *, any_of: list[str], sum_of: tuple[str, ...] = (),
                keep: str = "split") -> list[dict[str, Any]]:
    """Patient rows from scan rows: OR (max) over ``any_of``, sums of ``sum_of``, ``keep`` via one_or_mixed."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["patient_id"], []).append(r)
    out = []
    for pid, rs in sorted(groups.items()):
        row: dict[str, Any] = {"patient_id": pid, "n_scans": len(rs)}
        row.update({c: max(r[c] for r in rs) for c in any_of})
        row.update({c: sum(r[c] for r in rs) for c in sum_of})
        row[keep] = one_or_mixed({r[keep] for r in rs})
        out.append(row)
    return out


def _csv_text(columns: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_tables(result: ImportResult, out: Path, *, absolute: bool = False) -> list[Path]:
    """Write scans.csv and every table of ``result`` into ``out`` (each atomically) plus import-summary.json."""
    out.mkdir(parents=True, exist_ok=True)
    scans = [{"scan_id": s, "patient_id": p, "path": table_path(path, out, absolute),
              **({"series_uid": result.series.get(s, "")} if result.series else {})} for s, p, path in result.scans]
    written = [out / "scans.csv"]
    atomic_write_text(written[0], _csv_text(SCAN_COLUMNS + (["series_uid"] if result.series else []), scans))
    for name, table in result.tables.items():
        atomic_write_text(out / name, _csv_text(table.columns, table.rows))
        written.append(out / name)
    summary = {"dataset": result.dataset, "scans": len(result.scans),
               "patients": len({p for _, p, _ in result.scans}),
               "rows": {name: len(t.rows) for name, t in result.tables.items()},
               "dropped": dict(result.dropped), "prevalence": result.prevalence, "notes": result.notes}
    atomic_write_text(out / "import-summary.json", json.dumps(summary, indent=1))
    return written


def report_lines(result: ImportResult) -> list[str]:
    """The counts an import prints: scans, patients, rows per table, prevalences, what was left out and why."""
    patients = len({p for _, p, _ in result.scans})
    rows = ", ".join(f"{name} {len(t.rows)} rows" for name, t in result.tables.items())
    lines = [f"{result.dataset}: {len(result.scans)} scans of {patients} patients; {rows}"]
    for name, prev in result.prevalence.items():
        lines.append(f"  prevalence in {name}: " + ", ".join(f"{k} {v:.1%}" for k, v in prev.items()))
    if result.dropped:
        lines.append("  left out:")
        for why, n in sorted(result.dropped.items()):
            named = result.examples.get(why, [])
            lines.append(f"    {n} {why}" + (f" (e.g. {', '.join(named)}{' …' if n > len(named) else ''})"
                                              if named else ""))
    else:
        lines.append("  left out: nothing")
    if result.failures:
        lines.append(f"  failed: {len(result.failures)} unreadable file(s), listed above and in failures.csv")
    lines += [f"  note: {n}" for n in result.notes]
    return lines

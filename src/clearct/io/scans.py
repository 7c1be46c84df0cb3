"""``clearct scans ROOT --out scans.csv``: a study tree (a PACS or study export) → the cohort's scans.csv.

Every folder below ROOT is read header by header (pydicom, without pixel data); the CT images are grouped into
series as the reader groups them (:func:`clearct.io.dicom.series_group`), and a series whose files lie in several
folders is one series at their common folder. By default each study gets one row, the series the default rule
picks (:mod:`clearct.io.series`); ``--series-per-study all`` writes a row for every CT series. Each row names the
series in ``series_uid`` (its UID, else ``number:N`` or ``index:K``), so every command reads exactly that series.
``<out stem>-series.csv`` lists every CT series found with what the rule saw, and the closing lines say what was
skipped and why (localizers, other modalities, secondary captures, unreadable and non-DICOM files).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError
from clearct.config import ScansConfig
from clearct.io.dicom import SeriesGroup, scan_files, series_info
from clearct.io.series import SeriesInfo, choose, listing, selector_of
from clearct.io.tables import table_path

SCANS_COLUMNS = ["scan_id", "patient_id", "path", "series_uid"]
SERIES_COLUMNS = ["scan_id", "patient_id", "path", "series_uid", "series_number", "description", "images",
                  "thickness_mm", "coverage_mm", "axial", "kind", "chosen"]


@dataclass
class FoundSeries:
    """One CT series of the tree: what the rule sees, where its files lie, and the study it belongs to."""

    info: SeriesInfo
    folder: Path
    files: int


@dataclass
class Walk:
    """Every CT series below a root, and what was skipped (reason → count)."""

    series: list[FoundSeries]
    skipped: Counter


def _common(folders: list[Path]) -> Path:
    return Path(os.path.commonpath([str(f) for f in folders]))


def walk_tree(root: Path) -> Walk:
    """Read every header below ``root`` once, folder by folder (only one folder's headers in memory)."""
    if not root.is_dir():
        raise ClearctError("no such folder", root)
    skipped: Counter = Counter()
    groups: dict[SeriesGroup, list[tuple[Path, list]]] = {}
    folders = sorted((Path(d), sorted(f for f in fs if not f.startswith(".") and f != "DICOMDIR"))
                     for d, _, fs in os.walk(root))
    for folder, names in tqdm(folders, desc="scans: reading headers", unit="folder", leave=False, disable=None):
        if not names:
            continue
        scan = scan_files([folder / n for n in names])
        skipped["not DICOM"] += scan.not_dicom
        skipped["unreadable file"] += len(scan.warnings)
        for kind, n in scan.other_modalities.items():
            skipped[f"{kind} (not a CT image)"] += n
        for group, frames in scan.frames.items():
            groups.setdefault(group, []).append((folder, frames))
    found = []
    for group, parts in groups.items():
        frames = [f for _, fr in parts for f in fr]
        info = series_info(group, frames)
        if info.localizer:
            skipped["localizer (scout) series"] += 1
            continue
        found.append(FoundSeries(info, _common([folder for folder, _ in parts]), len({f.path for f in frames})))
    return Walk(found, +skipped)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "x"


def _short(uid: str) -> str:
    return hashlib.sha1(uid.encode()).hexdigest()[:8]


def _ids(found: FoundSeries, root: Path) -> tuple[str, str, str]:
    """(patient_id, study part, series part) of a series' scan_id: PatientID (else the first folder below ROOT),
    StudyID (else a hash of the StudyInstanceUID), SeriesNumber (else a hash of the UID)."""
    info = found.info
    rel = found.folder.relative_to(root).parts
    patient = info.patient or (rel[0] if rel else root.name)
    study = _short(info.study) if info.study else "study"
    series = f"s{info.number}" if info.number is not None else (_short(info.uid) if info.uid else "s")
    return patient, study, series


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        k += 1
        out = f"{name}-{k}"
    taken.add(out)
    return out


def scan_rows(walk: Walk, root: Path, out: Path, *, per_study: str, absolute: bool = False
              ) -> tuple[list[dict], list[dict]]:
    """The rows of scans.csv and of the series listing."""
    by_study: dict[tuple[str, str], list[FoundSeries]] = {}
    for s in walk.series:
        by_study.setdefault((s.info.patient, s.info.study), []).append(s)
    scans: list[dict] = []
    listed: list[dict] = []
    taken: set[str] = set()
    for key in sorted(by_study, key=lambda k: (k[0], k[1])):
        members = by_study[key]
        infos = [m.info for m in members]
        chosen, _ = choose(infos, None, root)  # one study: the default rule never refuses here
        for member in sorted(members, key=lambda m: listing(infos).index(m.info)):
            patient, study, series = _ids(member, root)
            # a selector that picks this series from its folder (which may hold series of other studies)
            here = [s.info for s in walk.series if s.folder == member.folder or member.folder in s.folder.parents]
            selector = selector_of(member.info, here)
            keep = per_study == "all" or member.info is chosen
            # the listing names the id a series not chosen would get, for a user who adds it to scans.csv
            scan_id = _unique(_safe(f"{patient}_{study}" + (f"_{series}" if per_study == "all" else "")), taken) \
                if keep else _safe(f"{patient}_{study}_{series}")
            row = {"scan_id": scan_id, "patient_id": patient, "path": table_path(member.folder, out.parent, absolute),
                   "series_uid": selector}
            if keep:
                scans.append(row)
            info = member.info
            listed.append({**row, "series_number": "" if info.number is None else info.number,
                           "description": info.description, "images": info.images,
                           "thickness_mm": "" if info.thickness_mm is None else f"{info.thickness_mm:g}",
                           "coverage_mm": f"{info.coverage_mm:g}", "axial": int(info.axial),
                           "kind": "derived" if info.derived else "original",
                           "chosen": int(member.info is chosen)})
    return scans, listed


def _csv(columns: list[str], rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def run_scans(cfg: ScansConfig) -> int:
    """Walk ``cfg.root``, write ``cfg.out`` (scans.csv) and its series listing, print what was skipped."""
    out = Path(cfg.out)
    listing_file = out.with_name(f"{out.stem}-series.csv")
    for path in (out, listing_file):
        if path.exists() and not cfg.overwrite:
            raise ClearctError("exists; pass --overwrite to replace it", path)
    root = Path(cfg.root).resolve()
    walk = walk_tree(root)
    if not walk.series:
        why = ", ".join(f"{why} ×{n}" for why, n in walk.skipped.items()) or "no files"
        raise ClearctError(f"no CT series found ({why})", root)
    scans, listed = scan_rows(walk, root, out, per_study=cfg.series_per_study, absolute=cfg.absolute_paths)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, _csv(SCANS_COLUMNS, scans))
    atomic_write_text(listing_file, _csv(SERIES_COLUMNS, listed))
    studies = len({(s.info.patient, s.info.study) for s in walk.series})
    patients = len({r["patient_id"] for r in scans})
    print(f"scans: {len(walk.series)} CT series in {studies} studies of {patients} patients → {len(scans)} rows in "
          f"{out}" + (" (one per study: the default rule's series)" if cfg.series_per_study == "one" else ""))
    print(f"scans: every series with what the rule saw: {listing_file}")
    for why, n in sorted(walk.skipped.items()):
        print(f"scans: skipped {n} {why}")
    return 0

"""``clearct synth``: a cohort of phantom CT scans written as real files plus the cohort tables.

OUT/scans/… (one scan per patient), OUT/scans.csv, OUT/labels.csv (one row per patient_id: the 8 lesion
locations, the 7 lung abnormalities, stage_high, primary_tumour, scan_range), OUT/lesions.csv (key-slice boxes
of annotated scans) and, for ``--format png``, OUT/scans/DL_info.csv
(DeepLesion layout, found by the PNG reader beside the slice folders). A rerun into the same folder with the same
settings reuses finished scans (each scan's truth is stored next to it as JSON), so an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError
from clearct.common.failures import Failures, reason_of
from clearct.common.runs import start_run
from clearct.config import SynthConfig, SynthFindings, SynthSettings
from clearct.synth.findings import LOCATIONS, LUNG_FINDINGS
from clearct.synth.noise import acquisition
from clearct.synth.phantom import Phantom, make_phantom
from clearct.synth.writers import scan_relpath, write_scan

LOG = logging.getLogger("clearct")
LABEL_COLUMNS = ["patient_id", *LOCATIONS, *LUNG_FINDINGS, "stage_high", "primary_tumour", "scan_range"]
LESION_COLUMNS = ["scan_id", "slice_index", "x1", "y1", "x2", "y2", "label", "slice_first", "slice_last"]
SCAN_RANGES = {"mixed": 0.5, "chest": 1.0, "cap": 0.0}  # share of chest-only scans


def patient_ids(seed: int, i: int) -> tuple[str, str]:
    pid = f"s{seed}p{i + 1:04d}"
    return pid, f"{pid}_ct"


def render_patient(seed: int, index: int, settings: SynthSettings, *, with_findings: bool = True) -> Phantom:
    """Patient ``index`` of the cohort with ``seed``: exactly what generate_cohort writes (tests re-render it)."""
    pid, sid = patient_ids(seed, index)
    s = settings
    acq = acquisition(s.acquisition, noise_hu=s.noise_hu, kernel=s.kernel, thickness_factor=s.thickness_factor,
                      hu_offset=s.hu_offset)
    findings = SynthFindings(**s.model_dump(include=set(SynthFindings.model_fields)))
    return make_phantom(np.random.SeedSequence(seed, spawn_key=(index,)), patient_id=pid, scan_id=sid, size=s.size,
                        slices=s.slices, chest_share=SCAN_RANGES[s.scan_range], knobs=findings, acq=acq,
                        with_findings=with_findings, pixel_mm=_pair(s.pixel_mm), slice_mm=_pair(s.slice_mm))


def _pair(value: list[float] | None) -> tuple[float, float] | None:
    return None if value is None else (value[0], value[1])


def _one_patient(job: dict[str, Any]) -> dict[str, Any]:
    """Render and write one patient (runs in a worker process); returns the rows of the cohort tables."""
    out, fmt = Path(job["out"]), job["format"]
    pid, sid = job["patient_id"], job["scan_id"]
    rel = scan_relpath(sid, fmt)
    truth_path = out / "scans" / f".{sid}.truth.json"
    if truth_path.exists() and (out / rel).exists():
        truth = json.loads(truth_path.read_text())
        if truth.get("settings") == job["settings"]:
            return truth  # finished in an earlier run with the same settings
    ph = render_patient(job["entropy"], job["index"], SynthSettings(**job["render"]))
    write_scan(ph.volume, out / rel, fmt, uid_key=f"clearct-synth-{job['entropy']}-{sid}")
    f = ph.findings
    labels = {"patient_id": pid, **f.locations, **f.lung, "stage_high": f.stage_high,
              "primary_tumour": f.primary_tumour, "scan_range": ph.scan_range}
    lesions = [{"scan_id": sid, "slice_index": les.key_slice, "x1": les.box[0], "y1": les.box[1],
                "x2": les.box[2], "y2": les.box[3], "label": les.location,
                "slice_first": les.slice_range[0], "slice_last": les.slice_range[1], "diameter_mm": round(les.diameter_mm, 1)}
               for les in f.lesions]
    dz, px, _ = ph.volume.spacing_mm
    truth = {"settings": job["settings"], "scan": {"scan_id": sid, "patient_id": pid, "path": rel},
             "labels": labels, "lesions": lesions, "annotated": job["annotated"], "slices": ph.volume.hu.shape[0],
             "size": ph.volume.hu.shape[1:], "spacing_mm": [dz, px, px]}
    atomic_write_text(truth_path, json.dumps(truth))
    return truth


def _one_patient_or_reason(job: dict[str, Any]) -> dict[str, Any]:
    """:func:`_one_patient`, or ``{"failed": reason}``: one patient that cannot be written must not stop the rest."""
    try:
        return _one_patient(job)
    except Exception as exc:
        return {"failed": reason_of(exc, Path(job["out"]) / scan_relpath(job["scan_id"], job["format"]))}


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _dl_info(truths: list[dict[str, Any]]) -> str:
    """DeepLesion's DL_info.csv layout (a subset of its columns): one row per annotated lesion; a scan without
    annotated lesions gets one row with empty lesion fields, so every folder's spacing can be looked up."""
    rows = []
    for t in truths:
        dz, px, _ = t["spacing_mm"]
        sid = t["scan"]["scan_id"]
        geometry = {"Patient_index": t["scan"]["patient_id"], "Slice_range": f"1, {t['slices']}",
                    "Spacing_mm_px_": f"{px}, {px}, {dz}", "Image_size": f"{t['size'][1]}, {t['size'][0]}",
                    "DICOM_windows": "-1024, 3071"}
        lesions = t["lesions"] if t["annotated"] else []
        for les in lesions:
            rows.append({**geometry, "File_name": f"{sid}_{les['slice_index'] + 1:03d}.png",
                         "Key_slice_index": les["slice_index"] + 1,
                         "Bounding_boxes": f"{les['x1']}, {les['y1']}, {les['x2']}, {les['y2']}",
                         "Coarse_lesion_type": LOCATIONS.index(les["label"]) + 1})
        if not lesions:
            rows.append({**geometry, "File_name": f"{sid}_001.png"})
    columns = ["File_name", "Patient_index", "Key_slice_index", "Bounding_boxes", "Coarse_lesion_type",
               "Slice_range", "Spacing_mm_px_", "Image_size", "DICOM_windows"]
    return _csv(rows, columns)


def generate_cohort(cfg: SynthConfig, *, progress: bool = True) -> dict[str, Any]:
    """Write the phantom cohort of ``cfg`` into ``cfg.out`` and return a summary (counts, prevalences, seconds,
    paths). The same config gives byte-identical files; per-patient seeds come from
    ``np.random.SeedSequence(cfg.seed)``."""
    out, patients, seed, format = Path(cfg.out), cfg.patients, cfg.seed, cfg.format
    (out / "scans").mkdir(parents=True, exist_ok=True)
    render = SynthSettings(**cfg.model_dump(include=set(SynthSettings.model_fields)))
    settings = json.dumps([seed, render.model_dump(mode="json", exclude={"workers"})], sort_keys=True)
    annotate_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1 << 30,)))
    annotated = annotate_rng.random(patients) >= cfg.unannotated
    jobs: list[dict[str, Any]] = []  # plain values: each job is pickled to a worker process
    for i in range(patients):
        pid, sid = patient_ids(seed, i)
        jobs.append({"out": str(out), "format": format, "patient_id": pid, "scan_id": sid, "index": i,
                     "entropy": seed, "render": render.model_dump(), "settings": settings,
                     "annotated": bool(annotated[i])})
    start = time.perf_counter()
    workers = max(1, min(cfg.workers, patients, os.cpu_count() or 1))
    bar = tqdm(total=patients, desc="synth", unit="scan", disable=not progress)
    failures = Failures("synth")
    truths = []
    with contextlib.ExitStack() as stack:
        run = map if workers == 1 else stack.enter_context(ProcessPoolExecutor(workers)).map
        for job, truth in zip(jobs, run(_one_patient_or_reason, jobs)):
            if "failed" in truth:
                failures.add(job["scan_id"], out / scan_relpath(job["scan_id"], format), truth["failed"])
            else:
                truths.append(truth)
            bar.update()
    bar.close()
    failures.write(out / "failures.csv")
    if not truths:
        raise ClearctError(f"no scan could be written ({failures.rows[0]['reason']})", out)
    atomic_write_text(out / "scans.csv", _csv([t["scan"] for t in truths], ["scan_id", "patient_id", "path"]))
    atomic_write_text(out / "labels.csv", _csv([t["labels"] for t in truths], LABEL_COLUMNS))
    lesion_rows = [les for t in truths if t["annotated"] for les in t["lesions"]]
    atomic_write_text(out / "lesions.csv", _csv(lesion_rows, LESION_COLUMNS))
    if format == "png":
        atomic_write_text(out / "scans" / "DL_info.csv", _dl_info(truths))
    seconds = time.perf_counter() - start
    prevalence = {c: float(np.mean([t["labels"][c] for t in truths])) for c in LABEL_COLUMNS[1:-1]}
    summary = {"out": str(out), "patients": patients, "format": format, "seconds": round(seconds, 2),
               "annotated_scans": int(annotated.sum()), "lesion_rows": len(lesion_rows),
               "lesions_drawn": sum(len(t["lesions"]) for t in truths), "prevalence": prevalence,
               "failed": [r["scan_id"] for r in failures.rows]}
    LOG.info("synth: %s", json.dumps(summary))
    return summary


def run_synth(cfg: SynthConfig) -> int:
    """CLI entry point for ``clearct synth``."""
    start_run(cfg.out, "synth", cfg)
    summary = generate_cohort(cfg)
    failed = summary["failed"]
    print(f"wrote {summary['patients'] - len(failed)} {summary['format']} scans, {summary['lesion_rows']} annotated "
          f"lesions to {summary['out']} in {summary['seconds']:.1f} s"
          + (f"; {len(failed)} failed (listed in {Path(summary['out']) / 'failures.csv'})" if failed else ""))
    return 1 if failed else 0

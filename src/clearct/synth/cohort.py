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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError
from clearct.common.failures import Failures, reason_of
from clearct.common.runs import start_run
from clearct.synth.findings import LOCATIONS, LUNG_FINDINGS, Knobs
from clearct.synth.noise import KERNELS, PRESETS, acquisition
from clearct.synth.phantom import Phantom, make_phantom
from clearct.synth.writers import scan_relpath, write_scan

LOG = logging.getLogger("clearct")
LABEL_COLUMNS = ["patient_id", *LOCATIONS, *LUNG_FINDINGS, "stage_high", "primary_tumour", "scan_range"]
LESION_COLUMNS = ["scan_id", "slice_index", "x1", "y1", "x2", "y2", "label", "slice_first", "slice_last"]
FORMATS = ("dicom", "nifti", "png")
SCAN_RANGES = {"mixed": 0.5, "chest": 1.0, "cap": 0.0}  # share of chest-only scans


def patient_ids(seed: int, i: int) -> tuple[str, str]:
    pid = f"s{seed}p{i + 1:04d}"
    return pid, f"{pid}_ct"


def _check(patients: int, fmt: str, size: int, slices: int, knobs: Knobs, scan_range: str, preset: str,
           kernel: str | None, unannotated: float) -> None:
    problems = []
    if patients < 1:
        problems.append(f"patients must be ≥ 1 (got {patients})")
    if fmt not in FORMATS:
        problems.append(f"format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if size < 32 or slices < 4:
        problems.append(f"size must be ≥ 32 and slices ≥ 4 (got size {size}, slices {slices})")
    lo, hi = knobs.lesion_size_mm
    if not 2.0 <= lo <= hi <= 120.0:
        problems.append(f"lesion_size_mm must be min,max with 2 ≤ min ≤ max ≤ 120 (got {lo},{hi})")
    for name in ("location_prevalence", "lung_prevalence", "primary_tumour", "stage_high_share"):
        if not 0.0 <= getattr(knobs, name) <= 1.0:
            problems.append(f"{name} must lie in [0, 1] (got {getattr(knobs, name)})")
    if not 0.0 <= unannotated <= 1.0:
        problems.append(f"unannotated must lie in [0, 1] (got {unannotated})")
    if knobs.lesion_contrast <= 0:
        problems.append(f"lesion_contrast must be > 0 (got {knobs.lesion_contrast})")
    if scan_range not in SCAN_RANGES:
        problems.append(f"scan_range must be one of {', '.join(SCAN_RANGES)} (got {scan_range!r})")
    if preset not in PRESETS:
        problems.append(f"acquisition must be one of {', '.join(PRESETS)} (got {preset!r})")
    if kernel is not None and kernel not in KERNELS:
        problems.append(f"kernel must be one of {', '.join(KERNELS)} (got {kernel!r})")
    if problems:
        raise ClearctError("; ".join(problems))


def render_patient(seed: int, index: int, *, size: int = 128, slices: int = 48, scan_range: str = "mixed",
                   acq: dict[str, Any] | None = None, knobs: dict[str, Any] | None = None,
                   with_findings: bool = True) -> Phantom:
    """Patient ``index`` of the cohort with ``seed``: exactly what generate_cohort writes (tests re-render it)."""
    pid, sid = patient_ids(seed, index)
    return make_phantom(np.random.SeedSequence(seed, spawn_key=(index,)), patient_id=pid, scan_id=sid, size=size,
                        slices=slices, chest_share=SCAN_RANGES[scan_range], knobs=Knobs(**(knobs or {})),
                        acq=acquisition(**(acq or {"preset": "standard"})), with_findings=with_findings)


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
    ph = render_patient(job["entropy"], job["index"], **job["render"])
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


def generate_cohort(out: str | Path, *, patients: int = 20, seed: int = 0, format: str = "dicom",
                    size: int = 128, slices: int = 48, scan_range: str = "mixed", unannotated: float = 0.3,
                    acquisition_preset: str = "standard", noise_hu: float | None = None, kernel: str | None = None,
                    thickness_factor: float | None = None, hu_offset: float | None = None, workers: int = 2,
                    progress: bool = True, **knob_values: Any) -> dict[str, Any]:
    """Write a phantom cohort into ``out`` and return a summary (counts, prevalences, seconds, paths).

    ``knob_values`` are the :class:`~clearct.synth.findings.Knobs` fields (prevalences, lesion size, contrast).
    The same arguments give byte-identical files; per-patient seeds come from ``np.random.SeedSequence(seed)``.
    """
    unknown = set(knob_values) - set(Knobs.__dataclass_fields__)
    if unknown:
        raise ClearctError(f"unknown synth option(s): {', '.join(sorted(unknown))}")
    if "lesion_size_mm" in knob_values:
        knob_values["lesion_size_mm"] = tuple(float(v) for v in knob_values["lesion_size_mm"])
        if len(knob_values["lesion_size_mm"]) != 2:
            raise ClearctError(f"lesion_size_mm must be two numbers min,max (got {knob_values['lesion_size_mm']})")
    knobs = Knobs(**knob_values)
    _check(patients, format, size, slices, knobs, scan_range, acquisition_preset, kernel, unannotated)
    out = Path(out)
    (out / "scans").mkdir(parents=True, exist_ok=True)
    acq = {"preset": acquisition_preset, "noise_hu": noise_hu, "kernel": kernel,
           "thickness_factor": thickness_factor, "hu_offset": hu_offset}
    settings = json.dumps([seed, format, size, slices, scan_range, asdict(knobs), acq], sort_keys=True)
    annotate_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1 << 30,)))
    annotated = annotate_rng.random(patients) >= unannotated
    jobs = []
    for i in range(patients):
        pid, sid = patient_ids(seed, i)
        render = {"size": size, "slices": slices, "scan_range": scan_range, "knobs": asdict(knobs), "acq": acq}
        jobs.append({"out": str(out), "format": format, "patient_id": pid, "scan_id": sid, "index": i,
                     "entropy": seed, "render": render, "settings": settings, "annotated": bool(annotated[i])})
    start = time.perf_counter()
    workers = max(1, min(workers, patients, os.cpu_count() or 1))
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


def run_synth(cfg) -> int:
    """CLI entry point for ``clearct synth`` (config: :class:`clearct.config.SynthConfig`)."""
    start_run(cfg.out, "synth", cfg)
    knobs = {name: getattr(cfg, name) for name in Knobs.__dataclass_fields__}
    summary = generate_cohort(
        cfg.out, patients=cfg.patients, seed=cfg.seed, format=cfg.format, size=cfg.size, slices=cfg.slices,
        scan_range=cfg.scan_range, unannotated=cfg.unannotated, acquisition_preset=cfg.acquisition,
        noise_hu=cfg.noise_hu, kernel=cfg.kernel, thickness_factor=cfg.thickness_factor, hu_offset=cfg.hu_offset,
        workers=cfg.workers, **knobs,
    )
    failed = summary["failed"]
    print(f"wrote {summary['patients'] - len(failed)} {summary['format']} scans, {summary['lesion_rows']} annotated "
          f"lesions to {summary['out']} in {summary['seconds']:.1f} s"
          + (f"; {len(failed)} failed (listed in {Path(summary['out']) / 'failures.csv'})" if failed else ""))
    return 1 if failed else 0

"""From the numbers to the images: a ``viewer.html`` under ``errors/`` for each of the most confident errors listed
in a crossval or deploy folder's ``errors.csv``, rendered from the CT the feature file names (attr ``source``)
with the attention of the models that scored the scan (a cross-validation scan: its out-of-fold models) and no
heatmap (that needs the encoder). Capped per target and per run, so a review costs seconds, not a re-run.

``clearct crossval`` reaches this through :func:`run_crossval`: crossval itself (in ``mil``) cannot import the
report layer, so the command runs the MIL cross-validation and then this review.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np

from clearct.common.atomic import atomic_write_text
from clearct.common.device import resolve_device
from clearct.common.errors import ClearctError
from clearct.evaluate.errors import read_errors, write_errors
from clearct.inference.ensembles import load_ensemble
from clearct.inference.viewers import lesions_by_scan, model_identity, write_scan_viewer
from clearct.io import read_ct
from clearct.io.features import read_features, recorded_scan
from clearct.io.tables import LesionBox, read_scans_table
from clearct.mil.crossval import run_crossval as run_mil_crossval
from clearct.mil.data import Bag, select_windows
from clearct.mil.store import MilEnsemble
from clearct.modeling.store import Ensemble
from clearct.report.viewer import Prediction

LOG = logging.getLogger("clearct")
PER_TARGET = 6
PER_RUN = 20


def choose_reviewed(rows: list[dict], per_target: int = PER_TARGET, limit: int = PER_RUN) -> list[str]:
    """Scan ids to render: per target, false positives and negatives alternating by rank, at most ``per_target``
    scans per target and ``limit`` in all; a scan wrong for several targets is rendered once."""
    chosen: list[str] = []
    for target in dict.fromkeys(r["target"] for r in rows):
        mine = sorted((r for r in rows if r["target"] == target), key=lambda r: (int(r["rank"]), r["error"] != "false_positive"))
        for scan_id in list(dict.fromkeys(r["scan_id"] for r in mine))[:per_target]:
            if len(chosen) == limit:
                return chosen
            if scan_id not in chosen:
                chosen.append(scan_id)
    return chosen


def fold_models(ensemble: MilEnsemble, fold: int) -> MilEnsemble:
    """The models that did not train on a cross-validation scan of outer ``fold`` (0: every model)."""
    if fold == 0:
        return ensemble
    keep = [i for i, m in enumerate(ensemble.metas) if re.fullmatch(rf"fold-{fold}(-inner-\d+)?", str(m["job"]))]
    if not keep:
        return ensemble
    return MilEnsemble([ensemble.models[i] for i in keep], [ensemble.metas[i] for i in keep], ensemble.device)


def _bag(path: Path, ensemble: MilEnsemble) -> tuple[Bag, tuple[str, str | None]]:
    """The scan's bag in the models' windows and the CT (path, series) its feature file records."""
    f = select_windows(read_features(path), ensemble.window_names)
    bag = Bag(f.scan_id, f.patient_id, f.feats.astype(np.float32), f.window.astype(np.int64),
              f.slice_index.astype(np.int32), f.z_mm.astype(np.float32), np.zeros(0, np.float32), path)
    return bag, recorded_scan(f)


def _notes(rows: list[dict]) -> list[str]:
    return [f"{r['error'].replace('_', ' ')} for {r['target']} (set {r['set']}, rank {r['rank']}): score "
            f"{float(r['probability']):.3f} vs threshold {float(r['threshold']):.3f}, label {r['label']}"
            for r in rows]


def review_errors(out: Path, ensemble: Ensemble, model_folder: Path, *, features: Path | None = None,
                  scans: Path | None = None, lesions: Path | None = None, per_target: int = PER_TARGET,
                  limit: int = PER_RUN) -> list[str]:
    """Render ``out/errors/<scan_id>.html`` for the scans chosen from ``out/errors.csv``, fill its ``viewer``
    column and return the viewers' paths relative to ``out``. A scan whose CT cannot be read is skipped with a
    log line (the table keeps an empty viewer cell)."""
    table = out / "errors.csv"
    if not table.is_file():
        return []
    rows = read_errors(table)
    chosen = choose_reviewed(rows, per_target, limit)
    ct_paths = {r.scan_id: (str(r.path), r.series) for r in read_scans_table(scans)} if scans is not None else {}
    boxes: dict[str, list[LesionBox]] = lesions_by_scan(lesions)
    identity = model_identity(ensemble, model_folder)
    predictions = _prediction_table(out)
    done: dict[str, str] = {}
    no_ct: list[str] = []  # reported once: features without a recorded CT are common (planted, moved data)
    for scan_id in chosen:
        mine = [r for r in rows if r["scan_id"] == scan_id]
        try:
            bag, attention, (source, series) = None, None, ct_paths.get(scan_id, ("", None))
            if isinstance(ensemble, MilEnsemble) and features is not None:
                bag, recorded = _bag(Path(features) / f"{scan_id}.h5", ensemble)
                source, series = (source, series) if source else recorded
                _, attn = fold_models(ensemble, int(mine[0]["fold"])).predict([bag])
                attention = attn[0]
            if not source:
                no_ct.append(scan_id)
                continue
            volume = read_ct(source, series=series)
            volume.scan_id = scan_id
            target = out / "errors" / f"{_file_name(scan_id)}.html"
            write_scan_viewer(target, volume, windows=ensemble.windows, bag=bag, attention=attention,
                              lesions=boxes.get(scan_id, []), predictions=predictions.get((mine[0]["set"], scan_id), []),
                              identity=identity, notes=_notes(mine))
        except (ClearctError, OSError, ValueError) as exc:  # this viewer is lost, the others and the run go on
            LOG.warning("errors: no viewer for %s: %s", scan_id, exc)
            print(f"clearct: warning: no error viewer for {scan_id}: {exc}", file=sys.stderr)
            continue
        done[scan_id] = target.relative_to(out).as_posix()
    if no_ct:
        line = (f"no error viewers for {len(no_ct)} scan(s) ({', '.join(no_ct[:5])}"
                f"{' …' if len(no_ct) > 5 else ''}): their feature files record no CT path and no scans.csv names them")
        LOG.info("errors: %s", line)  # the log only: the run asked for nothing a CT path would be needed for
    for r in rows:
        r["viewer"] = done.get(r["scan_id"], "")
    write_errors(table, rows)
    return list(done.values())


def _file_name(scan_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", scan_id)


def _prediction_table(out: Path) -> dict[tuple[str, str], list[Prediction]]:
    """predictions.csv as (set, scan_id) → one Prediction per target (the numbers errors.csv refers to)."""
    found: dict[tuple[str, str], list[Prediction]] = {}
    with open(out / "predictions.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            score, thr = float(r["probability"]), float(r["threshold"])
            call = bool(int(r["prediction"])) if r.get("prediction", "") != "" else None
            found.setdefault((r["set"], r["scan_id"]), []).append(
                Prediction(r["target"], score, thr if np.isfinite(thr) else None, call))
    return found


def add_to_summary(out: Path, viewers: list[str]) -> None:
    """List the error viewers in ``out/summary.json``."""
    path = out / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary["error_viewers"] = viewers
    atomic_write_text(path, json.dumps(summary, indent=1))


def run_crossval(cfg) -> int:
    """``clearct crossval``: MIL cross-validation, then viewers of its most confident errors (``--error-viewers``)."""
    code = run_mil_crossval(cfg)
    if cfg.error_viewers and (cfg.out / "errors.csv").is_file():
        ensemble = load_ensemble(cfg.out, resolve_device(cfg.device))
        viewers = review_errors(cfg.out, ensemble, cfg.out, features=cfg.features)
        add_to_summary(cfg.out, viewers)
        print(f"crossval: {len(viewers)} error viewer(s) in {cfg.out / 'errors'}")
    return code

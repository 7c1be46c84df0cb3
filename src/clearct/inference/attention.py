"""``clearct attention``: the fold ensemble's attention over every scan's instances → ``attention.csv``, one
figure per scan (profile over z per window, lesion slices marked, top-k slice montage when the CT is given) and one
``viewers/<scan_id>.html`` per drawn scan (the CT from scans.csv, else the path its feature file records); with
``--heatmaps`` also the heatmaps of every target over each scan's top-k instances (``heatmaps/<scan_id>.h5``
for every scan with a CT, PNG overlays for the scans that get figures; :mod:`clearct.inference.heatmaps`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clearct.common.device import map_large_blocks, resolve_device
from clearct.common.errors import ClearctError
from clearct.common.failures import Issues
from clearct.common.runs import start_run
from clearct.config import AttentionConfig
from clearct.evaluate.tables import write_csv
from clearct.inference.ensembles import check_encoder, load_mil_models
from clearct.inference.heatmaps import heatmap_encoder, scan_heatmaps, write_scan_heatmaps
from clearct.inference.viewers import (
    heatmap_path,
    lesions_by_scan,
    model_identity,
    predictions_of,
    write_scan_viewer,
)
from clearct.io import CTVolume, read_ct
from clearct.io.features import read_features, recorded_scan
from clearct.io.tables import read_scans_table
from clearct.mil.data import Bag, feature_files, gigabytes, load_cohort
from clearct.report.attention import attention_figure

LOG = logging.getLogger("clearct")


def attention_rows(bag: Bag, attention: np.ndarray, windows: Sequence[Sequence]) -> list[dict]:
    """``attention.csv`` rows of one scan: scan, slice_index, z_mm, window (name), attention."""
    return [{"scan_id": bag.scan_id, "slice_index": int(s), "z_mm": float(z), "window": str(windows[w][0]),
             "attention": float(a)} for s, z, w, a in zip(bag.slice_index, bag.z_mm, bag.window, attention)]


def _feature_source(bag: Bag) -> tuple[str, str | None]:
    """The CT (path, series) the scan's feature file records (``extract`` writes them) when the path still
    exists, else ('', None)."""
    if bag.path is None:
        return "", None
    try:
        source, series = recorded_scan(read_features(bag.path, load_feats=False))
    except ClearctError:
        return "", None
    return (source, series) if source and Path(source).exists() else ("", None)


def run_attention(cfg: AttentionConfig) -> int:
    ensemble = load_mil_models(cfg.model, "attention", resolve_device(cfg.device))
    if cfg.heatmaps and cfg.scans is None:
        raise ClearctError("--heatmaps needs --scans scans.csv to read the CT of each scan", cfg.model)
    # the inputs are checked before the run folder exists: a refused command leaves nothing behind
    feature_files(cfg.features)
    lesions = lesions_by_scan(cfg.lesions)
    scan_records = {r.scan_id: r for r in read_scans_table(cfg.scans)} if cfg.scans is not None else {}
    out = start_run(cfg.out, "attention", cfg)
    issues = Issues()
    map_large_blocks()  # inference would otherwise grow the heap with every bag (common/device.py)
    cohort = load_cohort(cfg.features, None, None, issues=issues, dtype=np.float32, windows=ensemble.window_names,
                         cache_bytes=gigabytes(cfg.feature_memory_gb))
    check_encoder(ensemble, cohort.encoder, cfg.features)
    encoder = None
    if cfg.heatmaps:
        encoder = heatmap_encoder(ensemble, encoder=cfg.encoder, weights=cfg.weights, features=cfg.features,
                                  where=cfg.model, method=cfg.heatmap_method)
    scores, attn = ensemble.predict(cohort.bags)
    identity = model_identity(ensemble, cfg.model)
    names = ensemble.spec.output_names
    for n, (bag, a) in enumerate(tqdm(list(zip(cohort.bags, attn)), desc="attention", unit="scan", leave=False)):
        drawn = n < cfg.figures
        if not drawn and encoder is None:
            continue
        volume: CTVolume | None = None
        record = scan_records.get(bag.scan_id)
        source, series = (str(record.path), record.series) if record else (_feature_source(bag) if drawn
                                                                            else ("", None))
        if source:
            try:
                # a missing or broken scan costs only its montage, viewer and heatmaps
                volume = read_ct(source, series=series)
            except ClearctError as exc:
                issues.add("unreadable_scan", f"{exc}; figure without montage, no viewer or heatmaps")
        elif encoder is not None:
            issues.add("no_scan", f"{bag.scan_id}: not in {cfg.scans}; no heatmaps")
        if encoder is not None and volume is not None:
            maps = scan_heatmaps(volume.hu, bag, a, ensemble, encoder, top_k=cfg.top_k, method=cfg.heatmap_method)
            write_scan_heatmaps(out / "heatmaps", maps, volume.hu, dict(zip(names, map(float, scores[n]))),
                                overlays=drawn)
        if not drawn:
            continue
        attention_figure(out / "figures" / f"{bag.scan_id}.png", title=bag.scan_id, z_mm=bag.z_mm,
                         window=bag.window, slice_index=bag.slice_index, attention=a, windows=ensemble.windows,
                         lesion_slices=[b.slice_index for b in lesions.get(bag.scan_id, [])],
                         hu=None if volume is None else volume.hu, top_k=cfg.top_k)
        if cfg.viewers and volume is not None:
            volume.scan_id = bag.scan_id
            write_scan_viewer(out / "viewers" / f"{bag.scan_id}.html", volume, windows=ensemble.windows, bag=bag,
                              attention=a, heatmaps=heatmap_path(out, bag.scan_id),
                              lesions=lesions.get(bag.scan_id, []), predictions=predictions_of(ensemble, scores[n]),
                              identity=identity)
    # streamed: one row per instance (millions at cohort scale)
    write_csv(out / "attention.csv", (r for bag, a in zip(cohort.bags, attn) for r in attention_rows(bag, a, ensemble.windows)))
    print(f"attention: {len(cohort.bags)} scans → {out / 'attention.csv'}, {out / 'figures'}"
          + (f", {out / 'viewers'}" if cfg.viewers else "")
          + (f", heatmaps in {out / 'heatmaps'}" if encoder is not None else ""))
    return issues.finish(out, "attention")

"""``clearct attention``: the fold ensemble's attention over every scan's instances → ``attention.csv``, one
figure per scan (profile over z per window, lesion slices marked, top-k slice montage when the CT is given) and one
``viewers/<scan_id>.html`` per drawn scan (the CT from scans.csv, else the path its feature file records)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from clearct.common.device import resolve_device
from clearct.common.errors import ClearctError
from clearct.common.failures import Issues
from clearct.common.runs import start_run
from clearct.config import AttentionConfig
from clearct.evaluate.tables import write_csv
from clearct.inference.ensembles import load_mil_models
from clearct.inference.viewers import (
    heatmap_path,
    lesions_by_scan,
    model_identity,
    predictions_of,
    write_scan_viewer,
)
from clearct.io import read_ct
from clearct.io.features import read_features
from clearct.io.tables import read_scans_table
from clearct.mil.data import Bag, load_cohort
from clearct.modeling.store import Ensemble
from clearct.report.attention import attention_figure

LOG = logging.getLogger("clearct")


def attention_rows(bag: Bag, attention: np.ndarray, windows: Sequence[Sequence]) -> list[dict]:
    """``attention.csv`` rows of one scan: scan, slice_index, z_mm, window (name), attention."""
    return [{"scan_id": bag.scan_id, "slice_index": int(s), "z_mm": float(z), "window": str(windows[w][0]),
             "attention": float(a)} for s, z, w, a in zip(bag.slice_index, bag.z_mm, bag.window, attention)]


def check_encoder(ensemble: Ensemble, encoder: dict, where: Path) -> None:
    """Features must come from the encoder the models were trained on (name, weights and input size)."""
    want = ensemble.encoder
    if (encoder["encoder"], encoder["weights_sha256"]) != (want["encoder"], want["weights_sha256"]):
        raise ClearctError(f"features come from {encoder['encoder']} ({encoder['weights_sha256'][:12]}) but the "
                           f"models were trained on {want['encoder']} ({want['weights_sha256'][:12]})", where)
    have_size, want_size = encoder.get("image_size"), want.get("image_size")
    if have_size is not None and want_size is not None and int(have_size) != int(want_size):
        raise ClearctError(f"features were embedded at {have_size} px but the models were trained on features at "
                           f"{want_size} px", where)


def _feature_source(bag: Bag) -> str:
    """The CT path the scan's feature file records (``extract`` writes it) when it still exists, else ''."""
    if bag.path is None:
        return ""
    try:
        source = str(read_features(bag.path, load_feats=False).attrs.get("source", ""))
    except ClearctError:
        return ""
    return source if source and Path(source).exists() else ""


def run_attention(cfg: AttentionConfig) -> int:
    out = start_run(cfg.out, "attention", cfg)
    ensemble = load_mil_models(cfg.model, "attention", resolve_device(cfg.device))
    issues = Issues()
    cohort = load_cohort(cfg.features, None, None, issues=issues, dtype=np.float32, windows=ensemble.window_names)
    check_encoder(ensemble, cohort.encoder, cfg.features)
    scores, attn = ensemble.predict(cohort.bags)
    lesions = lesions_by_scan(cfg.lesions)
    paths = {r.scan_id: r.path for r in read_scans_table(cfg.scans)} if cfg.scans is not None else {}
    identity = model_identity(ensemble, cfg.model)
    rows = []
    for n, (bag, a) in enumerate(tqdm(list(zip(cohort.bags, attn)), desc="attention", unit="scan", leave=False)):
        rows += attention_rows(bag, a, ensemble.windows)
        if n >= cfg.figures:
            continue
        volume = None
        source = paths.get(bag.scan_id) or _feature_source(bag)
        if source:
            try:
                volume = read_ct(source)  # a missing or broken scan costs only the montage and the viewer
            except ClearctError as exc:
                issues.add("unreadable_scan", f"{exc}; figure without montage, no viewer")
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
    write_csv(out / "attention.csv", rows)
    print(f"attention: {len(cohort.bags)} scans → {out / 'attention.csv'}, {out / 'figures'}"
          + (f" and {out / 'viewers'}" if cfg.viewers else ""))
    return issues.finish(out, "attention")

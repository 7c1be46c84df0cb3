"""``clearct info PATH``: what clearct reads from a scan — the facts users check first."""

from __future__ import annotations

from typing import Any

import numpy as np

from clearct.config import InfoConfig
from clearct.io.read import read_ct
from clearct.io.volume import CTVolume

# Technical meta keys printed after the geometry, in this order, when present.
_META_KEYS = (
    "series_selector", "series_rule", "series_description", "kernel", "slice_thickness_mm", "manufacturer", "model", "kvp", "contrast",
    "transfer_syntax", "sop_class", "n_files", "source_dtype", "dl_info", "png_values", "hu_clipped",
)


def describe_volume(volume: CTVolume) -> dict[str, Any]:
    """The facts of a CTVolume as plain Python values (shape, spacing, z range, HU range, orientation …)."""
    hu = volume.hu
    gaps = np.diff(volume.z_mm)
    facts: dict[str, Any] = {
        "source": volume.source,
        "format": volume.meta.get("format", ""),
        "shape_zyx": list(volume.shape),
        "spacing_mm_zyx": [round(s, 6) for s in volume.spacing_mm],
        "z_range_mm": [float(volume.z_mm[0]), float(volume.z_mm[-1])],
        "z_ascending": bool(np.all(gaps > 0)) if gaps.size else True,
        "hu_range": [int(hu.min()), int(hu.max())],
        "hu_percentiles_1_50_99": [float(v) for v in np.percentile(hu, [1, 50, 99])],
        "orientation": f"source axes {volume.meta.get('source_orientation', '?')} → Z,Y,X = S,P,L "
        "(inferior→superior, anterior→posterior, right→left)",
        "series_uid": volume.meta.get("series_uid"),
    }
    facts.update({k: volume.meta[k] for k in _META_KEYS if volume.meta.get(k) not in (None, "")})
    facts["warnings"] = volume.warnings
    return facts


def format_facts(facts: dict[str, Any]) -> str:
    """``key: value`` lines, warnings last, one per line."""
    lines = [f"{k:<24}{'(none)' if v in (None, '') else v}" for k, v in facts.items() if k != "warnings"]
    lines += [f"{'warning':<24}{w}" for w in facts["warnings"]] or [f"{'warnings':<24}none"]
    return "\n".join(lines)


def run_info(cfg: InfoConfig) -> int:
    """Read ``cfg.path`` and print its facts."""
    volume = read_ct(cfg.path, series=cfg.series, spacing=cfg.spacing, png_values=cfg.png_values)
    print(format_facts(describe_volume(volume)))
    return 0

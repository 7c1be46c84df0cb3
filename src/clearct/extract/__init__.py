"""Frozen feature extraction: every slice (× window) of a scan → one row of `<scan_id>.h5`."""

from __future__ import annotations

from typing import Any

from clearct.extract.h5 import ScanFeatures, read_features, write_features

__all__ = ["ScanFeatures", "embed_volume", "read_features", "run_extract", "write_features"]


def __getattr__(name: str) -> Any:
    # embed_volume/run_extract pull in torch and the encoders; readers of h5 files should not pay for that
    if name == "embed_volume":
        from clearct.extract.embed import embed_volume

        return embed_volume
    if name == "run_extract":
        from clearct.extract.run import run_extract

        return run_extract
    raise AttributeError(f"module 'clearct.extract' has no attribute {name!r}")

"""Frozen feature extraction: every slice (× window) of a scan → one row of `<scan_id>.h5`."""

from clearct.extract.h5 import ScanFeatures, read_features, write_features

__all__ = ["ScanFeatures", "read_features", "write_features"]

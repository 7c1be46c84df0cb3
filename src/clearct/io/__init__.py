"""CT readers → CTVolume (DICOM series, NIfTI, DeepLesion PNG folders, npz) and cohort tables."""

from clearct.io.read import read_ct, read_scan
from clearct.io.tables import (
    LabelTable,
    LesionBox,
    ScanRecord,
    read_labels_table,
    read_lesions_table,
    read_scans_table,
)
from clearct.io.volume import CTVolume

__all__ = [
    "CTVolume",
    "LabelTable",
    "LesionBox",
    "ScanRecord",
    "read_ct",
    "read_scan",
    "read_labels_table",
    "read_lesions_table",
    "read_scans_table",
]

"""Synthetic phantom CT cohorts with known truth (``clearct synth``): anatomy, findings, acquisition, writers."""

from clearct.synth.cohort import LABEL_COLUMNS, generate_cohort, run_synth
from clearct.synth.findings import LOCATIONS, LUNG_FINDINGS
from clearct.synth.phantom import Phantom, make_phantom

__all__ = ["LABEL_COLUMNS", "LOCATIONS", "LUNG_FINDINGS", "Phantom", "generate_cohort", "make_phantom",
           "run_synth"]

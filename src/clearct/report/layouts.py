"""Where the workflows' stages write under their output folder: the demo writes by this layout and its report
reads by it, so no path is spelled twice."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEMO_ARMS = ("lecl", "random", "supervised")  # the encoders the demo compares (rows of its tables)
CONTROL = "control"  # the positive control: the LECL features with the annotated key slices marked
ARM_TITLES = {"lecl": "LECL", "random": "random init (same architecture)", "supervised": "supervised ceiling",
              CONTROL: "positive control (key slices marked)"}
DEMO_TASKS = {"location": (*DEMO_ARMS, CONTROL), "lung": DEMO_ARMS}  # task → arms cross-validated on it


@dataclass(frozen=True)
class DemoLayout:
    """The demo folder: two cohorts, an encoder run per pretrained arm, features per arm and cohort, a crossval
    and a deploy folder per task and arm, attention, predict, figures and the report."""

    root: Path

    @property
    def cohort(self) -> Path:
        return self.root / "cohort"

    @property
    def external(self) -> Path:
        return self.root / "external"

    @property
    def slice_cache(self) -> Path:
        return self.root / "slice-cache"

    def encoder(self, arm: str) -> Path:
        return self.root / "encoders" / arm

    def features(self, arm: str, cohort: str) -> Path:
        """``cohort``: ``cohort`` (training) or ``external``."""
        return self.root / "features" / arm / cohort

    def crossval(self, task: str, arm: str) -> Path:
        return self.root / task / arm / "crossval"

    def deploy(self, task: str, arm: str) -> Path:
        return self.root / task / arm / "deploy"

    def attention(self, arm: str) -> Path:
        return self.root / "attention" / arm

    @property
    def predict(self) -> Path:
        return self.root / "predict"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

"""Labels joined to scans: the task of a labels.csv over its target columns, and the join of label rows with the
scans of a cohort (feature files for MIL, volumes for finetune3d) by patient id or scan id, whichever the table is
keyed by. Every problem of the join is one issue line (:class:`clearct.common.failures.Issues`)."""

from __future__ import annotations

from collections.abc import Sequence, Set
from pathlib import Path

import numpy as np

from clearct.common.errors import ClearctError
from clearct.common.failures import Issues
from clearct.io.tables import LabelTable, read_labels_table
from clearct.modeling.tasks import TaskSpec, make_task, parse_label


def read_task(labels_path: Path, targets: Sequence[str], task: str) -> tuple[LabelTable, TaskSpec]:
    """labels.csv and the task over its ``targets`` columns; one-line errors for missing columns or bad tasks."""
    labels = read_labels_table(labels_path)
    missing = [t for t in targets if t not in labels.columns]
    if missing:
        raise ClearctError(f"target column(s) {', '.join(missing)} not in the labels table "
                           f"(columns: {', '.join(labels.columns)})", labels_path)
    try:
        return labels, make_task(task, list(targets), labels.columns)
    except ValueError as exc:
        raise ClearctError(str(exc), labels_path) from exc


def _names(ids: list[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class LabelJoin:
    """Label rows of labels.csv looked up by a scan's patient id or scan id (whichever the table is keyed by),
    with the join's problems reported as issues: unknown label values at once, scans without a label row and
    label rows without a scan by :meth:`finish`. Shared by the feature cohorts (MIL) and the volume cohorts
    (finetune3d); ``noun`` names a scan in the messages (``feature file``), ``kind`` in the issue kinds
    (``features``: ``features_without_labels``, ``labels_without_features``)."""

    def __init__(self, labels: LabelTable, spec: TaskSpec, labels_path: Path | None, issues: Issues, *, noun: str,
                 kind: str):
        self.labels, self.spec, self.path, self.issues = labels, spec, labels_path, issues
        self.noun, self.kind = noun, kind
        self.rows = {rid: [labels.columns[t][i] for t in spec.targets] for i, rid in enumerate(labels.ids)}
        self.used: set[str] = set()
        self.unlabelled: list[str] = []

    def label(self, scan_id: str, patient_id: str) -> np.ndarray | None:
        """The parsed label of a scan; None when it has no row (counted) or an unknown value (reported)."""
        key = patient_id if self.labels.id_column == "patient_id" else scan_id
        if key not in self.rows:
            self.unlabelled.append(scan_id)
            return None
        self.used.add(key)
        try:
            return parse_label(self.spec, self.rows[key])
        except ValueError as exc:
            self.issues.add("unknown_label", f"{self.path}: {self.labels.id_column} {key}: {exc}; "
                            f"scan {scan_id} left out", item=scan_id, path=self.path)
            return None

    def finish(self, source: Path, broken: Set[str] = frozenset()) -> None:
        """Report the scans without a label row and the label rows without a scan in ``source`` (ids in
        ``broken`` belong to scans already reported as unreadable)."""
        kind = self.kind
        if self.unlabelled:
            self.issues.add(f"{kind}_without_labels", f"{self.path}: no label row for {len(self.unlabelled)} "
                            f"{self.noun}(s) ({_names(self.unlabelled)}); left out", len(self.unlabelled))
        missing = [i for i in self.labels.ids if i not in self.used and i not in broken]
        if missing:
            self.issues.add(f"labels_without_{kind}", f"{self.path}: {len(missing)} label row(s) have no "
                            f"{self.noun} in {source} ({_names(missing)}); left out", len(missing))



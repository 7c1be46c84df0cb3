"""Labels joined to scans: the task of a labels.csv over its target columns, and the join of label rows with the
scans of a cohort (feature files for MIL, volumes for finetune3d) by patient id or scan id, whichever the table is
keyed by. Every problem of the join is one issue line (:class:`clearct.common.failures.Issues`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence, Set
from pathlib import Path

import numpy as np

from clearct.common.errors import ClearctError
from clearct.common.failures import Issues
from clearct.io.tables import LabelTable, read_labels_table
from clearct.modeling.tasks import TaskSpec, infer_task, make_task, parse_label

LOG = logging.getLogger("clearct")


def read_task(labels_path: Path, targets: Sequence[str], task: str | None, *,
              command: str | None = None) -> tuple[LabelTable, TaskSpec]:
    """labels.csv and the task over its ``targets`` columns; ``task=None`` infers it from the label values
    (:func:`clearct.modeling.tasks.infer_task`). One-line errors for missing columns, bad tasks and tasks that
    cannot be inferred. With ``command``, prints how the rows are matched and which task was inferred."""
    labels = read_labels_table(labels_path)
    missing = [t for t in targets if t not in labels.columns]
    if missing:
        hint = ""
        if any(t in ("scan_id", "patient_id") for t in missing):
            hint = "; scan_id and patient_id name the rows, they are not targets"
        raise ClearctError(f"target column(s) {', '.join(missing)} not in the labels table "
                           f"(columns: {', '.join(labels.columns)}){hint}", labels_path)
    try:
        note = ""
        if task is None:
            task, reason = infer_task(list(targets), labels.columns)
            note = f"task {task}, inferred: {reason} (--task sets another)"
        spec = make_task(task, list(targets), labels.columns)
    except ValueError as exc:
        raise ClearctError(str(exc), labels_path) from exc
    if command is not None:
        for line in (f"{labels_path}: {labels.keyed}", note):
            if line:
                print(f"{command}: {line}")
                LOG.info("%s: %s", command, line)
    return labels, spec


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
        self.patients = dict(zip(labels.ids, labels.patients)) if labels.patients is not None else {}
        self.used: set[str] = set()
        self.unlabelled: list[str] = []

    def label(self, scan_id: str, patient_id: str) -> np.ndarray | None:
        """The parsed label of a scan; None when it has no row (counted) or an unknown value (reported)."""
        key = patient_id if self.labels.id_column == "patient_id" else scan_id
        if key not in self.rows:
            self.unlabelled.append(scan_id)
            return None
        self.used.add(key)
        if self.patients and self.patients[key] != patient_id:
            self.issues.add("patient_mismatch", f"{self.path}: scan {scan_id}: the table names patient "
                            f"{self.patients[key]}, the scan belongs to {patient_id}; left out", item=scan_id,
                            path=self.path)
            return None
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



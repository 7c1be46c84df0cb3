"""Failed items of a batch command: one line each on the terminal (the first :data:`SHOWN`) and in the log, all of
them in ``failures.csv``; the rest of the batch goes on and the command's exit code is 1 at the end.

Every batch command (extract, pretrain's readers, synth, import, crossval / deploy / attention over feature files,
predict over a scans table) reports through :class:`Failures`, so the lines look the same everywhere:
``clearct extract: s3 failed: /data/s3.nii.gz: no such file or folder``. Commands that join inputs (features or
volumes with label rows) collect their problems in :class:`Issues`: warnings for rows that only lack their
counterpart, failures for broken inputs.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from clearct.common.atomic import atomic_write_text
from clearct.common.errors import ClearctError

LOG = logging.getLogger("clearct")
SHOWN = 20  # failure lines printed on the terminal; the log and failures.csv hold every one
COLUMNS = ("path", "reason")


def reason_of(exc: BaseException, path: str | Path | None = None) -> str:
    """One line for ``exc``: a ClearctError as it is (it names its file), anything else with the file and type."""
    if isinstance(exc, ClearctError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
        if path is not None and str(path) not in text:
            text = f"{path}: {text}"
    return " ".join(text.split())  # one line, whatever the exception held


def _terminal(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)  # between progress-bar redraws, not through them


@dataclass
class Failures:
    """The failed items of one batch: ``add`` prints and logs one line, ``write`` writes ``failures.csv``."""

    command: str
    id_column: str = "scan_id"
    shown: int = SHOWN
    rows: list[dict[str, str]] = field(default_factory=list)
    _printed: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, item: str, path: str | Path | None, reason: str | BaseException) -> None:
        if isinstance(reason, BaseException):
            reason = reason_of(reason, path)
        self.rows.append({self.id_column: item, "path": "" if path is None else str(path), "reason": reason})
        line = f"clearct {self.command}: {item} failed: {reason}"
        LOG.error(line)
        if self._printed < self.shown:
            _terminal(line)
        elif self._printed == self.shown > 0:  # shown = 0: the log only (e.g. torchrun ranks other than 0)
            _terminal(f"clearct {self.command}: further failures are not shown here (all are in failures.csv "
                      "and the log)")
        self._printed += 1

    def extend(self, rows: list[dict[str, str]]) -> None:
        """Rows gathered elsewhere (other ranks), already printed there."""
        self.rows += rows

    def write(self, path: str | Path) -> Path:
        """``failures.csv`` (header only when nothing failed, so a clean re-run replaces an old list)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[self.id_column, *COLUMNS], lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(path, buf.getvalue())
        return Path(path)

    def listing(self, where: str | Path) -> str:
        """Where the failures are listed, and how many the terminal did not show."""
        hidden = len(self.rows) - self.shown
        return f"listed in {where}" + (f", {hidden} of them not shown above" if hidden > 0 and self.shown else "")

    def summary(self, where: str | Path) -> str:
        """The closing count, e.g. ``3 failed (listed in OUT/failures.csv)``; empty when nothing failed."""
        return f"{len(self.rows)} failed ({self.listing(where)})" if self.rows else ""


# issue kinds that mean a scan's input is broken (not merely unmatched): listed in failures.csv, exit code 1
FAILURE_KINDS = ("unreadable_features", "nan_features", "empty_bag", "missing_window", "unknown_label",
                 "patient_mismatch")


@dataclass
class Issues:
    """Input problems: each is printed as one line (stderr and the log) and counted by kind; failures (see
    :data:`FAILURE_KINDS`) are also kept as ``failures.csv`` rows."""

    lines: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    failed: list[dict[str, str]] = field(default_factory=list)

    def add(self, kind: str, message: str, n: int = 1, *, item: str = "", path: Path | str | None = None) -> None:
        self.counts[kind] += n
        self.lines.append(message)
        if kind in FAILURE_KINDS:
            self.failed.append({"scan_id": item, "path": "" if path is None else str(path), "reason": message})
        LOG.warning(message)
        _terminal(f"clearct: warning: {message}")

    def summary(self) -> dict[str, int]:
        return dict(self.counts)

    def finish(self, out: Path, command: str) -> int:
        """Write ``failures.csv`` into ``out``, print the count of failures; the command's exit code (1 if any)."""
        failures = Failures(command)
        failures.extend(self.failed)
        listed = failures.write(out / "failures.csv")
        if failures:
            print(f"clearct {command}: {failures.summary(listed)}", file=sys.stderr)
        return 1 if failures else 0

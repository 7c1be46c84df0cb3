"""Atomic file writes: write next to the target, then rename, so a crash never leaves a half-written file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed onto ``target``.

    On an exception the temporary file is removed and the target is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


_RANDOM = 8  # characters mkstemp puts between the prefix and the suffix


def remove_leftovers(folder: str | Path, names: Iterable[str], suffix: str = ".tmp") -> list[Path]:
    """Remove the temporary files that :func:`atomic_path` left beside ``names`` in ``folder`` when its process was
    killed (SIGKILL, power loss) between writing and renaming; returns what was removed.

    Only the temporaries of ``names`` are touched, so a process working on other targets in the same folder (another
    torchrun rank) keeps its own.
    """
    folder, wanted = Path(folder), set(names)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    cut = len(suffix) + _RANDOM + 1  # ".<8 random characters><suffix>" after the target's name
    for entry in folder.iterdir():
        name = entry.name
        ours = name.startswith(".") and name.endswith(suffix) and len(name) > cut and name[-cut] == "."
        if ours and name[1:-cut] in wanted and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed

"""The one exception type the CLI turns into a single clear line (no traceback)."""

from __future__ import annotations

from pathlib import Path


class ClearctError(Exception):
    """A problem with the user's input: the message names the file (when there is one) and what is wrong."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)

"""Run folders: every command writes its resolved config.yaml and a log into ``--out``."""

from __future__ import annotations

import hashlib
import logging
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from clearct import __version__
from clearct.common import compute
from clearct.common.atomic import atomic_write_text

LOG = logging.getLogger("clearct")


def start_run(out: str | Path, command: str, config: Any) -> Path:
    """Create ``out``, write ``config.yaml`` (the resolved config), attach ``<command>.log`` to the logger and start
    the run's compute measurement (written by commands that call ``compute.finish_run``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    compute.begin_run(out, command)
    data = config.model_dump(mode="json") if hasattr(config, "model_dump") else dict(config)
    header = f"# clearct {__version__} {command} — resolved configuration\n"
    atomic_write_text(out / "config.yaml", header + yaml.safe_dump({command: data}, sort_keys=False))
    log_path = out / f"{command}.log"
    if not any(getattr(h, "baseFilename", None) == str(log_path.resolve()) for h in LOG.handlers):
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.info("clearct %s %s, python %s, %s", __version__, command, sys.version.split()[0], platform.platform())
    return out


@contextmanager
def stage_logs() -> Iterator[None]:
    """Detach, when the block ends, the log handlers that ``start_run`` attached inside it: when several commands
    run in one process (demo, benchmark), each command's log then holds only its own lines."""
    before = list(LOG.handlers)
    try:
        yield
    finally:
        for handler in [h for h in LOG.handlers if h not in before]:
            LOG.removeHandler(handler)
            handler.close()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()

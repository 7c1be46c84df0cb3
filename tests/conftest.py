"""Shared fixtures. ``realct`` points at ../shared/realct and skips cleanly when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REALCT = Path(__file__).resolve().parents[1].parent / "shared" / "realct"


@pytest.fixture
def realct() -> Path:
    if not REALCT.is_dir():
        pytest.skip("../shared/realct is not present (real CT scans for reader tests)")
    return REALCT

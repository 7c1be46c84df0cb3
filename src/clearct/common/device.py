"""Device selection shared by every command: ``auto`` picks CUDA when present, else CPU."""

from __future__ import annotations

import contextlib
from typing import Any


def resolve_device(name: str = "auto") -> Any:
    """Return a ``torch.device`` for ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast_for(device: Any, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA, a no-op on CPU (fp32 there keeps results reproducible)."""
    import torch

    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()

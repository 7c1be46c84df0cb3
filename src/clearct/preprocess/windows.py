"""HU windows: presets, parsing of ``"lung,abdomen"`` / ``"name:lo:hi"`` specs, and clip + scale to [0, 1]."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from clearct.common.errors import ClearctError

# The paper's windows (HU): abdomen −175..275 for lesion work, lung −1500..500 for chest tasks.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {"abdomen": (-175.0, 275.0), "lung": (-1500.0, 500.0)}


@dataclass(frozen=True)
class Window:
    """An HU window: values ``lo`` map to 0, ``hi`` to 1, clipped outside."""

    name: str
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi)) or self.hi <= self.lo:
            raise ClearctError(f"window {self.name!r}: need lo < hi, got lo={self.lo} hi={self.hi}")


def _parse_one(item: str | Window) -> Window:
    if isinstance(item, Window):
        return item
    text = item.strip()
    if text in WINDOW_PRESETS:
        return Window(text, *WINDOW_PRESETS[text])
    parts = text.split(":")
    if len(parts) == 3 and parts[0]:
        try:
            return Window(parts[0], float(parts[1]), float(parts[2]))
        except ValueError:
            pass
    raise ClearctError(
        f"unknown window {text!r}: use a preset ({', '.join(WINDOW_PRESETS)}) or name:lo:hi, e.g. soft:-160:240"
    )


def parse_windows(spec: str | Sequence[str | Window]) -> list[Window]:
    """``"lung,abdomen"``, ``"bone:-450:1050"`` or a list of such items (or Windows) → list of Window.

    Order is kept (it fixes the window index in feature files); a repeated name is an error.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    windows = [_parse_one(item) for item in items if not (isinstance(item, str) and not item.strip())]
    if not windows:
        raise ClearctError(f"no window given in {spec!r}")
    names = [w.name for w in windows]
    if len(set(names)) != len(names):
        raise ClearctError(f"window names repeat in {spec!r}")
    return windows


def window_hu(hu: torch.Tensor | np.ndarray, lo: float, hi: float) -> torch.Tensor:
    """Clip HU to [lo, hi] and scale linearly to [0, 1] (float32, same device as ``hu``)."""
    x = torch.as_tensor(hu).to(torch.float32)
    return ((x - lo) / (hi - lo)).clamp_(0.0, 1.0)

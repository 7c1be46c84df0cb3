"""Model-ready tensors from CT volumes: HU windows, rendering of every slice in every window, slice selection."""

from clearct.preprocess.render import render_slices
from clearct.preprocess.select import select_slices
from clearct.preprocess.windows import WINDOW_PRESETS, Window, parse_windows, window_hu

__all__ = ["WINDOW_PRESETS", "Window", "parse_windows", "render_slices", "select_slices", "window_hu"]

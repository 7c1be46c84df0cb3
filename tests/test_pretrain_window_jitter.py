"""PretrainSettings.window_jitter → ViewSpec.window_jitter: 0 gives unjittered views, 1 (the default, the paper's
MoCo v3 recipe) the views from before the option bit for bit."""

from __future__ import annotations

import numpy as np
import torch

from clearct.config import PretrainSettings
from clearct.pretrain import views
from clearct.pretrain.views import ViewSpec, make_views

LUNG = (-1500.0, 500.0)
BOX = (20.0, 24.0, 34.0, 40.0)


def _grey(view: torch.Tensor) -> torch.Tensor:
    return view[0] * 0.229 + 0.485  # undo the first channel's normalisation


def _window_of_every_view(strength: float, seeds: int = 40) -> list[float]:
    """Grey level of views of a uniform 0 HU slice (lung window: 0.75 unjittered); no blur or solarize, so only
    the window changes it."""
    spec = ViewSpec(size=16, windows=(LUNG,), window_jitter=strength, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0))
    hu = np.zeros((48, 48), np.int16)
    levels = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        for v in (*make_views(hu, spec, rng), *make_views(hu, spec, rng, box=BOX),
                  *make_views(hu, spec, rng, full_slice=True)):
            grey = _grey(v)
            assert float(grey.max() - grey.min()) < 1e-5  # a uniform slice stays uniform
            levels.append(float(grey.mean()))
    return levels


def test_no_jitter_gives_the_configured_window_and_half_jitter_less_spread():
    assert PretrainSettings().window_jitter == 1.0 and ViewSpec(size=8, windows=(LUNG,)).window_jitter == 1.0
    unjittered = np.asarray(_window_of_every_view(0.0))
    np.testing.assert_allclose(unjittered, 0.75, atol=1e-6)
    spread = {s: np.ptp(_window_of_every_view(s)) for s in (0.5, 1.0)}
    assert 0.02 < spread[0.5] < spread[1.0]


def _jitter_before_the_option(window, strength, rng):
    """The window jitter as it was written before the option existed."""
    lo, hi = window
    width = hi - lo
    centre = (lo + hi) / 2 + rng.uniform(-0.1, 0.1) * width
    width *= rng.uniform(0.8, 1.25)
    return centre - width / 2, centre + width / 2


def test_full_jitter_reproduces_the_views_before_the_option_bitwise(monkeypatch):
    spec = ViewSpec(size=24, windows=(LUNG, (-175.0, 275.0)), window_jitter=1.0)
    hu = (np.random.default_rng(9).normal(0, 400, (48, 48))).astype(np.int16)

    def all_views() -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for seed in range(12):
            rng = np.random.default_rng(seed)
            out += [*make_views(hu, spec, rng), *make_views(hu, spec, rng, box=BOX),
                    *make_views(hu, spec, rng, full_slice=True)]
        return out

    ours = all_views()
    monkeypatch.setattr(views, "jitter_window", _jitter_before_the_option)
    before = all_views()
    assert all(torch.equal(a, b) for a, b in zip(ours, before, strict=True))
    for seed in range(200):  # and the window itself, draw for draw, at many levels and widths
        window = tuple(sorted(np.random.default_rng(1000 + seed).uniform(-2000, 2000, 2)))
        assert views.jitter_window(window, 1.0, np.random.default_rng(seed)) == _jitter_before_the_option(
            window, 1.0, np.random.default_rng(seed))

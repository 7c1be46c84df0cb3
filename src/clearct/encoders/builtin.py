"""Fills the registry: importing the architecture modules runs their ``@register_encoder`` decorators
(``clearct.encoders`` imports this module, so the registry is full whenever the package is imported).

Foundation baselines (``clearct.encoders.baselines``) and DrasCLR runs (``clearct.encoders.drasclr``) are
registered here too; their optional packages are imported only when one is built.
"""

from __future__ import annotations

from torch import nn

from clearct.encoders import mambaout, resnet, timm_any, vit_conv, vmamba  # noqa: F401  (registration side effects)
from clearct.encoders.baselines import BASELINES
from clearct.encoders.drasclr.model import encoder_from_info
from clearct.encoders.registry import register_encoder

for _name, _builder in BASELINES.items():
    register_encoder(_name)(_builder)


@register_encoder("drasclr")
def drasclr(*, info: dict | None = None) -> nn.Module:
    """The DrasCLR 3D patch encoder; its shape comes from the run's encoder.json (defaults without one)."""
    return encoder_from_info(info or {})

"""MambaOut (Yu & Wang 2024) from timm, returning the 576-d (tiny) normed, average-pooled stage-4 features.

timm's ``num_classes=0`` keeps the head's 4× MLP (576 → 2304 for tiny); CLEAR uses the pooled features before it,
so the MLP (``head.pre_logits``) is removed and only the head's LayerNorm stays: ``mambaout_tiny`` then has
22,906,080 parameters. Keys of full timm checkpoints load; their MLP and classifier keys are ignored.
A CNN: any ``image_size`` runs through the same weights (224 px by default, the paper's size).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from clearct.encoders.registry import describe, register_encoder
from clearct.encoders.timm_any import describe_timm, timm_model


def mambaout(timm_name: str, encoder_name: str, input_size: int | None = None, **kwargs: Any) -> nn.Module:
    """A timm MambaOut whose forward is stem → stages → mean over H, W → LayerNorm (B, dims[-1])."""
    model = timm_model(timm_name, **kwargs)
    model.head.pre_logits = nn.Identity()
    model.head.num_features = model.head.in_features
    model.head_hidden_size = model.head.in_features
    return describe(describe_timm(model, encoder_name, model.head.in_features), input_size=input_size or 224,
                    ignore_prefixes=("head.pre_logits.", "head.fc."))


@register_encoder("mambaout_tiny")
def mambaout_tiny(*, image_size: int | None = None) -> nn.Module:
    """MambaOut-Tiny: depths 3-3-9-3, widths 96-192-384-576 (22.9M, 576-d)."""
    return mambaout("mambaout_tiny", "mambaout_tiny", image_size)


@register_encoder("mambaout_kobe")
def mambaout_kobe(*, image_size: int | None = None) -> nn.Module:
    """MambaOut-Kobe: depths 3-3-15-3, widths 48-96-192-288 (288-d)."""
    return mambaout("mambaout_kobe", "mambaout_kobe", image_size)


@register_encoder("mambaout_femto")
def mambaout_femto(*, image_size: int | None = None) -> nn.Module:
    """MambaOut-Femto: depths 3-3-9-3, widths 48-96-192-288 (288-d)."""
    return mambaout("mambaout_femto", "mambaout_femto", image_size)


@register_encoder("mambaout_test")
def mambaout_test(*, image_size: int | None = None) -> nn.Module:
    """Tiny test configuration: one block per stage, widths 16-24-32-48, 64 px input."""
    return mambaout("mambaout_femto", "mambaout_test", image_size or 64, depths=(1, 1, 1, 1), dims=(16, 24, 32, 48))

"""``timm:<model>``: any timm architecture as a pooled-feature encoder (random init or local weights).

``pretrained=False`` always: weights come only from a local file through ``create_encoder(..., weights=...)``.
The output is what timm's ``num_classes=0`` forward gives (the pooled pre-logits features); input size and
normalisation come from the model's ``pretrained_cfg``. ``image_size`` is timm's ``img_size`` for models that take
it (ViTs and other token models); CNNs, which do not, run at any size as built.
"""

from __future__ import annotations

import contextlib
from typing import Any

import timm
from torch import nn

from clearct.common.errors import ClearctError
from clearct.encoders.registry import describe, register_encoder
from clearct.encoders.spatial import timm_tap


def timm_model(name: str, **kwargs: Any) -> Any:
    """``timm.create_model(name, pretrained=False, num_classes=0, **kwargs)`` with one-line errors.

    Typed ``Any``: the callers use the architecture's own attributes (``num_features``, ``head``,
    ``forward_features``), which ``create_model``'s ``nn.Module`` does not declare."""
    if name not in timm.list_models(name):
        raise ClearctError(f"timm has no model {name!r} (timm {timm.__version__}; see timm.list_models())")
    return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)


def describe_timm(model: nn.Module, encoder_name: str, embed_dim: int) -> nn.Module:
    """Registry attributes from the model's pretrained_cfg (classifier keys of full checkpoints are ignored) and the
    tap of its last spatial map (:func:`clearct.encoders.spatial.timm_tap`)."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    classifier = cfg.get("classifier") or "head"
    prefixes = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return describe(
        model,
        encoder_name=encoder_name,
        embed_dim=int(embed_dim),
        input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        mean=tuple(float(m) for m in cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(float(s) for s in cfg.get("std", (0.229, 0.224, 0.225))),
        ignore_prefixes=tuple(f"{p}." for p in prefixes),
        spatial_map=timm_tap(model),
    )


@register_encoder("timm:")
def timm_encoder(*, variant: str, image_size: int | None = None) -> nn.Module:
    """Any timm model by name, classifier removed (``num_classes=0``), at ``image_size`` px."""
    model = None
    if image_size is not None:
        # a CNN's constructor has no img_size (TypeError): it runs at any size as built
        with contextlib.suppress(TypeError):
            model = timm_model(variant, img_size=image_size)
    model = model or timm_model(variant)
    dim = getattr(model, "head_hidden_size", None) or model.num_features
    model = describe_timm(model, f"timm:{variant}", dim)
    return model if image_size is None else describe(model, input_size=int(image_size))

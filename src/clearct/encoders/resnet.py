"""Small dense-convolution encoders for CPU runs: timm's ResNet (BasicBlock) at narrow widths, GeM-pooled.

The paper's encoders (ViT-B, MambaOut-Tiny, VMamba) need a GPU; on a 2-core CPU a pretraining run of a few minutes
sees a few thousand slices, so the demo's recipe (docs/pretraining.md) uses a network of ~0.3 M parameters. Two
choices keep small lesions visible: the last stage is dilated (timm's ``output_stride=16``), so a 128 px slice
ends in an 8 × 8 map instead of 4 × 4, and the map is GeM-pooled (:mod:`clearct.encoders.pooling`) instead of
averaged. A CNN: any ``image_size`` runs through the same weights (128 px by default, the size clearct synth
writes).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clearct.encoders.pooling import GeM
from clearct.encoders.registry import describe, register_encoder
from clearct.encoders.spatial import SpatialTap
from clearct.encoders.timm_any import describe_timm, timm_model


class PooledCNN(nn.Module):
    """A timm CNN's ``forward_features`` map, GeM-pooled to (B, C)."""

    def __init__(self, backbone: Any):  # a timm CNN (timm_model)
        super().__init__()
        self.backbone = backbone
        self.pool = GeM()
        self.num_features = int(backbone.num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x))


def resnet_gem(encoder_name: str, *, channels: tuple[int, ...], image_size: int | None) -> nn.Module:
    backbone = timm_model("resnet18", channels=channels, layers=(1,) * len(channels), output_stride=16)
    model = PooledCNN(backbone)
    model.pretrained_cfg = backbone.pretrained_cfg
    # spatial_map: the last stage's map, before GeM (heatmaps)
    return describe(describe_timm(model, encoder_name, model.num_features), input_size=image_size or 128,
                    ignore_prefixes=("backbone.fc.",), spatial_map=SpatialTap("pool", "input"))


@register_encoder("resnet_tiny")
def resnet_tiny(*, image_size: int | None = None) -> nn.Module:
    """ResNet, one BasicBlock per stage, widths 16-32-64-128, last stage dilated, GeM: 0.33 M, 128-d, 128 px."""
    return resnet_gem("resnet_tiny", channels=(16, 32, 64, 128), image_size=image_size)


@register_encoder("resnet_small")
def resnet_small(*, image_size: int | None = None) -> nn.Module:
    """The same with widths 32-64-128-256: 1.3 M, 256-d, 128 px."""
    return resnet_gem("resnet_small", channels=(32, 64, 128, 256), image_size=image_size)

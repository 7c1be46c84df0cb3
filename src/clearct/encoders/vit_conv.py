"""MoCo v3's ViT with a convolutional stem ("ViT-ConvB"), built on timm's ``VisionTransformer``.

The stem (Xiao et al. 2021, as in MoCo v3) replaces the 16×16 patch projection by four 3×3 stride-2 convolutions
(BN, ReLU) with widths embed_dim/8 … embed_dim, then a 1×1 convolution to the embedding; it takes the place of one
transformer block, hence 11 blocks for the base model. Position embeddings are the fixed 2D sin-cos table of MoCo v3
(zero for the class token, not trained), and the output is the normed class token — the feature MoCo v3's projector
consumes. The trunk of ``vit_conv_base`` has 82,199,904 parameters, counting the class token and the (frozen)
position table: MoCo v3's own figure for the same model. ``image_size`` (a multiple of 16) sets the token grid; the
sin-cos table is rebuilt for it, so weights trained at one size load at another exactly.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from clearct.common.errors import ClearctError
from clearct.encoders.registry import describe, register_encoder
from clearct.encoders.spatial import timm_tap

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvStem(nn.Module):
    """4 × [3×3 conv stride 2, BN, ReLU] doubling from embed_dim/8, then a 1×1 conv; total stride 16.

    Takes timm's ``embed_layer`` keyword arguments; returns tokens (B, N, embed_dim).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 **_: object):
        super().__init__()
        if patch_size != 16 or embed_dim % 8:
            raise ValueError("the conv stem needs patch_size 16 and an embed_dim divisible by 8")
        layers: list[nn.Module] = []
        cin, cout = in_chans, embed_dim // 8
        for _stage in range(4):
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
            cin, cout = cout, cout * 2
        layers.append(nn.Conv2d(cin, embed_dim, 1))
        self.proj = nn.Sequential(*layers)
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return self.patch_size[0] if as_scalar else self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def sincos_table(grid: tuple[int, int], dim: int, prefix_tokens: int = 1) -> torch.Tensor:
    """MoCo v3's fixed table (1, prefix + H·W, dim): [sin h, cos h, sin w, cos w] per token, zeros for prefix."""
    table = build_sincos2d_pos_embed(list(grid), dim, temperature=10000.0, interleave_sin_cos=True)
    return torch.cat([torch.zeros(prefix_tokens, dim), table], dim=0).unsqueeze(0)


def vit_conv(name: str, *, embed_dim: int, depth: int, num_heads: int, input_size: int = 224) -> nn.Module:
    """A ViT with the conv stem, fixed sin-cos positions, class-token output (no head), MoCo v3 init."""
    if input_size % 16:
        raise ClearctError(f"{name}: the image size must be a multiple of 16 (the conv stem's stride), got {input_size}")
    model = VisionTransformer(
        img_size=input_size, patch_size=16, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        mlp_ratio=4.0, qkv_bias=True, num_classes=0, global_pool="token", embed_layer=ConvStem,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), weight_init="moco",
    )
    pos_embed = model.pos_embed
    assert pos_embed is not None  # timm leaves it out only for models without a position embedding
    with torch.no_grad():
        pos_embed.copy_(sincos_table(model.patch_embed.grid_size, embed_dim))
    pos_embed.requires_grad_(False)
    return describe(model, encoder_name=name, embed_dim=embed_dim, input_size=input_size,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, ignore_prefixes=("head.",), spatial_map=timm_tap(model))


@register_encoder("vit_conv_base")
def vit_conv_base(*, image_size: int | None = None) -> nn.Module:
    """ViT-B/16 with conv stem: 768-d, 11 blocks, 12 heads (82.2M)."""
    return vit_conv("vit_conv_base", embed_dim=768, depth=11, num_heads=12, input_size=image_size or 224)


@register_encoder("vit_conv_small")
def vit_conv_small(*, image_size: int | None = None) -> nn.Module:
    """ViT-S/16 with conv stem: 384-d, 11 blocks, 12 heads as in MoCo v3 (stem widths halved)."""
    return vit_conv("vit_conv_small", embed_dim=384, depth=11, num_heads=12, input_size=image_size or 224)


@register_encoder("vit_conv_test")
def vit_conv_test(*, image_size: int | None = None) -> nn.Module:
    """Tiny test configuration: 64-d, 2 blocks, 64 px input."""
    return vit_conv("vit_conv_test", embed_dim=64, depth=2, num_heads=2, input_size=image_size or 64)

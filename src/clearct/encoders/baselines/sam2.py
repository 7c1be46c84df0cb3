"""SAM2 Hiera-L image encoder (256-d): transformers' ``Sam2VisionModel`` with the hiera_large settings.

Input 224 px with ImageNet mean/std; the embedding is SAM2's ``vision_features`` — the FPN level at stride 16
(256×14×14 at 224 px, after the top-down sum from stride 32) — mean-pooled over space.

Weights: the released ``sam2_hiera_large.pt`` (``["model"]``, ``image_encoder.*`` keys, renamed to transformers'
names below) or a Hugging Face Sam2 folder / .safetensors (``vision_encoder.*``). Both are loaded strictly into
the vision model itself: handing a full SAM2 checkpoint to ``Sam2VisionModel.from_pretrained`` finds no matching
names and silently leaves a random model, which is the failure this path rules out.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from clearct.encoders.baselines.common import FrozenBaseline, load_strict, read_state, require, sub_state
from clearct.encoders.spatial import SpatialTap

# where the released weights are published (as of this writing: check the page) and the file --weights takes
RELEASED_WEIGHTS = ("sam2_hiera_large.pt from https://huggingface.co/facebook/sam2-hiera-large (SAM 2.1: "
                    "sam2.1_hiera_large.pt from https://huggingface.co/facebook/sam2.1-hiera-large; both are linked "
                    "from https://github.com/facebookresearch/sam2)")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# sam2 (facebookresearch) image-encoder names → transformers Sam2VisionModel names
_RENAMES = [
    (r"^trunk\.", "backbone."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"\.norm1\.", ".layer_norm1."),
    (r"\.norm2\.", ".layer_norm2."),
    (r"\.mlp\.layers\.0\.", ".mlp.proj_in."),
    (r"\.mlp\.layers\.1\.", ".mlp.proj_out."),
    (r"^neck\.convs\.(\d+)\.conv\.", r"neck.convs.\1."),
]


def sam2_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the tensors of sam2's ``image_encoder`` (prefix already removed) to transformers' names."""
    out = {}
    for key, value in state.items():
        for pattern, repl in _RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


class SpatialMean(torch.nn.Module):
    """(B, C, h, w) → (B, C), the mean over space."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class Sam2HieraLarge(FrozenBaseline):
    encoder_name = "sam2_hiera_large"
    embed_dim = 256
    input_size = 224
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self) -> None:
        super().__init__()
        tf = require("transformers", "sam2", "sam2_hiera_large")
        backbone = tf.Sam2HieraDetConfig(  # sam2_hiera_l.yaml
            hidden_size=144,
            num_attention_heads=2,
            blocks_per_stage=[2, 6, 36, 4],
            embed_dim_per_stage=[144, 288, 576, 1152],
            num_attention_heads_per_stage=[2, 4, 8, 16],
            window_size_per_stage=[8, 4, 16, 8],
            global_attention_blocks=[23, 33, 43],
            window_positional_embedding_background_size=[7, 7],
            image_size=[self.input_size, self.input_size],
        )
        config = tf.Sam2VisionConfig(
            backbone_config=backbone, backbone_channel_list=[1152, 576, 288, 144], fpn_top_down_levels=[2, 3]
        )
        self.vision = tf.Sam2VisionModel(config)
        self.pool = SpatialMean()  # a module, so that the map it pools can be tapped for heatmaps
        self.spatial_map = SpatialTap("pool", "input")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.vision(pixel_values=x).fpn_hidden_states[-1])  # stride 16: SAM2's vision_features


def build_sam2_hiera_large(weights: str | Path | None = None) -> Sam2HieraLarge:
    """The SAM2 Hiera-L image encoder; random init without ``weights``."""
    model = Sam2HieraLarge()
    if weights is not None:
        state = read_state(weights)
        nested = state.get("model")
        if isinstance(nested, dict):  # a training checkpoint: the tensors under "model"
            state = nested
        if any(k.startswith("image_encoder.") for k in state):
            state = sam2_to_transformers(sub_state(state, "image_encoder.", weights))
        else:
            state = sub_state(state, "vision_encoder.", weights)
        load_strict(model.vision, state, weights)
    return model.frozen(weights)

"""BiomedCLIP's image tower (512-d): timm ViT-B/16 + the 768→512 linear projection, as open_clip builds it.

Built offline from open_clip's ``TimmModel`` with the settings of BiomedCLIP's ``open_clip_config.json``
(``vit_base_patch16_224``, token pooling, linear projection without bias), never through the hub. Weights come
from the released ``open_clip_pytorch_model.bin`` (the ``visual.*`` tensors, loaded strictly).
"""

from __future__ import annotations

from pathlib import Path

import torch

from clearct.encoders.baselines.common import FrozenBaseline, load_strict, read_state, require, sub_state
from clearct.encoders.spatial import timm_tap

# where the released weights are published (as of this writing: check the page) and the file --weights takes
RELEASED_WEIGHTS = ("open_clip_pytorch_model.bin from https://huggingface.co/microsoft/"
                    "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class BiomedCLIPVision(FrozenBaseline):
    encoder_name = "biomedclip"
    embed_dim = 512
    input_size = 224
    mean = OPENAI_CLIP_MEAN
    std = OPENAI_CLIP_STD

    def __init__(self) -> None:
        super().__init__()
        timm_model = require("open_clip.timm_model", "biomedclip", "biomedclip")
        self.visual = timm_model.TimmModel(
            "vit_base_patch16_224", embed_dim=512, image_size=224, pool="", proj="linear", pretrained=False
        )
        self.spatial_map = timm_tap(self.visual.trunk, "visual.trunk.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def build_biomedclip(weights: str | Path | None = None) -> BiomedCLIPVision:
    """The BiomedCLIP image encoder; random init without ``weights``."""
    model = BiomedCLIPVision()
    if weights is not None:
        load_strict(model.visual, sub_state(read_state(weights), "visual.", weights), weights)
    return model.frozen(weights)

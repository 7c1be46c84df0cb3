"""Merlin's image encoder (3D, 512-d): the I3-ResNet-152 of merlin-vlm with its contrastive head.

Built from merlin-vlm's architecture class ``I3ResNet`` around a randomly initialised torchvision ResNet-152 —
not through ``merlin.Merlin``, whose constructor downloads checkpoints and a text model. Weights come from the
released Merlin checkpoint (``encode_image.i3_resnet.*`` tensors, or a bare I3ResNet state dict), loaded strictly.
Preprocessing follows Merlin's transforms: RAS, 1.5×1.5×3 mm, HU [−1000, 1000] → [0, 1], pad/crop to
224×224×160; one 512-d vector (the contrastive head) per scan.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from clearct.encoders.baselines.common import FrozenBaseline, load_strict, read_state, require, sub_state
from clearct.encoders.baselines.volume3d import pad_or_crop, ras_volume
from clearct.io.volume import CTVolume

# where the released weights are published (as of this writing: check the page) and the file --weights takes
RELEASED_WEIGHTS = ("i3_resnet_clinical_longformer_best_clip_04-02-2024_23-21-36_epoch_99.pt from "
                    "https://huggingface.co/stanfordmimi/Merlin")


class MerlinImageEncoder(FrozenBaseline):
    encoder_name = "merlin"
    embed_dim = 512
    input_size = 224
    is_3d = True
    hu_window = (-1000.0, 1000.0)
    spacing_mm = (1.5, 1.5, 3.0)  # x, y, z
    volume_size = (224, 224, 160)

    def __init__(self) -> None:
        super().__init__()
        i3res = require("merlin.models.i3res", "merlin", "merlin")
        torchvision_models = require("torchvision.models", "merlin", "merlin")
        self.i3_resnet = i3res.I3ResNet(
            torchvision_models.resnet152(weights=None), class_nb=1692, conv_class=True
        )

    def prepare_volume(self, volume: CTVolume) -> torch.Tensor:
        """The model input for one scan, (1, 1, 224, 224, 160)."""
        x = ras_volume(volume, self.spacing_mm, self.hu_window, (0.0, 1.0))
        return pad_or_crop(x, self.volume_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            # I3ResNet always wraps its stages in activation checkpointing, which warns when nothing needs grads
            warnings.simplefilter("ignore", UserWarning)
            contrastive, _phenotypes = self.i3_resnet(x)
        return contrastive


def build_merlin(weights: str | Path | None = None) -> MerlinImageEncoder:
    """Merlin's image encoder; random init without ``weights``."""
    model = MerlinImageEncoder()
    if weights is not None:
        state = read_state(weights)
        if any(k.startswith("encode_image.i3_resnet.") for k in state):
            state = sub_state(state, "encode_image.i3_resnet.", weights)
        load_strict(model.i3_resnet, state, weights)
    return model.frozen(weights)

"""CT-CLIP's image encoder (3D, 512-d, GPU only): CTViT + ``to_visual_latent``, from the user's own install.

CT-CLIP is not on PyPI and its licence is non-commercial, so clearct never vendors it: the architecture class
comes from the ``transformer_maskgit`` package of the user's CT-CLIP checkout (``pip install -e`` of its
``transformer_maskgit`` folder), the weights from its released checkpoint (``visual_transformer.*`` and
``to_visual_latent.*`` tensors). The embedding follows CTCLIP's forward: CTViT's encoded tokens averaged over
the depth axis, flattened (24·24·512) and projected to 512. Input as CT-CLIP's inference data: 0.75×0.75×1.5 mm,
HU [−1000, 1000] → [−1, 1], padded (with −1) / cropped to 480×480×240, depth first.
"""

from __future__ import annotations

from pathlib import Path

import torch

from clearct.common.errors import ClearctError
from clearct.encoders.baselines.common import FrozenBaseline, load_strict, read_state, sub_state
from clearct.encoders.baselines.volume3d import pad_or_crop, ras_volume
from clearct.io.volume import CTVolume

# where the released weights are published (as of this writing: check the page) and the file --weights takes
RELEASED_WEIGHTS = ("CT-CLIP_v2.pt from https://huggingface.co/datasets/ibrahimethemhamamci/CT-RATE (folder "
                    "models/CT-CLIP-Related; gated: accept the dataset's terms), code at "
                    "https://github.com/ibrahimethemhamamci/CT-CLIP")
INSTALL_HINT = (
    "install CT-CLIP yourself (github.com/ibrahimethemhamamci/CT-CLIP: pip install -e transformer_maskgit)"
)


class CTCLIPImageEncoder(FrozenBaseline):
    encoder_name = "ctclip"
    embed_dim = 512
    input_size = 480
    is_3d = True
    hu_window = (-1000.0, 1000.0)
    spacing_mm = (0.75, 0.75, 1.5)  # x, y, z
    volume_size = (480, 480, 240)

    def __init__(self) -> None:
        super().__init__()
        try:
            from transformer_maskgit import CTViT
        except ImportError as exc:
            raise ClearctError(f"ctclip needs CT-CLIP's transformer_maskgit package: {INSTALL_HINT}") from exc
        if not torch.cuda.is_available():
            raise ClearctError("ctclip runs on a CUDA GPU only (CTViT on 480×480×240 volumes); no GPU found")
        self.visual_transformer = CTViT(  # CT-CLIP's released configuration
            dim=512,
            codebook_size=8192,
            image_size=480,
            patch_size=20,
            temporal_patch_size=10,
            spatial_depth=4,
            temporal_depth=4,
            dim_head=32,
            heads=8,
        )
        self.to_visual_latent = torch.nn.Linear(24 * 24 * 512, 512, bias=False)

    def prepare_volume(self, volume: CTVolume) -> torch.Tensor:
        """The model input for one scan, (1, 1, 240, 480, 480): depth first, as CTViT reads a video."""
        x = ras_volume(volume, self.spacing_mm, self.hu_window, (-1.0, 1.0))
        return pad_or_crop(x, self.volume_size, value=-1.0).permute(0, 1, 4, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.visual_transformer(x, return_encoded_tokens=True)  # (B, T, H, W, D)
        return self.to_visual_latent(tokens.mean(dim=1).flatten(1))


def build_ctclip(weights: str | Path | None = None) -> CTCLIPImageEncoder:
    """CT-CLIP's image encoder; random init without ``weights``."""
    model = CTCLIPImageEncoder()
    if weights is not None:
        state = read_state(weights)
        load_strict(model.visual_transformer, sub_state(state, "visual_transformer.", weights), weights)
        load_strict(model.to_visual_latent, sub_state(state, "to_visual_latent.", weights), weights)
    return model.frozen(weights)

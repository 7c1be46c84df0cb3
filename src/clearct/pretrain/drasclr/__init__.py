"""DrasCLR (Yu et al., Medical Image Analysis 2023) in clearct: anatomy-aware 3D contrastive pretraining.

``clearct pretrain --method drasclr`` runs :func:`run_drasclr`; extraction of a DrasCLR run embeds every patch
with :func:`embed_volume_patches`. See docs/drasclr.md for the method and where clearct departs from the paper.
"""

from clearct.pretrain.drasclr.extract import embed_volume_patches
from clearct.pretrain.drasclr.model import DrasCLREncoder, EncoderSpec
from clearct.pretrain.drasclr.patches import PatchSpec
from clearct.pretrain.drasclr.train import run_drasclr

__all__ = ["DrasCLREncoder", "EncoderSpec", "PatchSpec", "embed_volume_patches", "run_drasclr"]

"""DrasCLR (Yu et al., Medical Image Analysis 2023) in clearct: anatomy-aware 3D contrastive pretraining.

``clearct pretrain --method drasclr`` runs :func:`run_drasclr`; the encoder it trains lives in
:mod:`clearct.encoders.drasclr` (extraction embeds its patch grid through ``embed_scan``). See docs/drasclr.md for
the method and where clearct departs from the paper.
"""

from clearct.pretrain.drasclr.train import run_drasclr

__all__ = ["run_drasclr"]

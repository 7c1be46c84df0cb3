"""Slice-encoder pretraining: MoCo v3 and LECL (``clearct pretrain``), and DrasCLR (``drasclr/``).

Modules: ``losses`` (the contrastive loss), ``schedules`` (lr, momentum), ``moco`` (heads, momentum encoder),
``views`` (crops, augmentations), ``cache`` (slice cache), ``data`` (dataset, sampler), ``distributed``
(torchrun helpers), ``train`` (``run_pretrain``). See docs/pretraining.md.
"""

from clearct.pretrain.losses import contrastive_loss
from clearct.pretrain.schedules import learning_rate, momentum

__all__ = ["contrastive_loss", "learning_rate", "momentum"]

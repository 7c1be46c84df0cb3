"""The supervised ceiling: the same trunk trained on per-slice lesion targets, exported like any pretraining run.

It answers "how much of the signal this architecture can see does self-supervision recover": the trunk sees the
slices SSL sees, at the same size and with the same augmentations, but learns from the labels of lesions.csv —
per label (location), 1 on every slice a lesion of that label covers (its slice extent where the table has one,
else its key slice), 0 on the other slices of annotated scans. Its frozen features then go through the same
extract → crossval as an SSL encoder's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def slice_bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over slices and labels, positives weighted by ``pos_weight`` (per label)."""
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


def positive_weights(targets: torch.Tensor, cap: float = 10.0) -> torch.Tensor:
    """√(negatives / positives) per label, at most ``cap``: rare labels count more without dominating."""
    pos = targets.float().mean(0).clamp(min=1e-4)
    return ((1 - pos) / pos).sqrt().clamp(max=cap)


class SliceClassifier(nn.Module):
    """``trunk`` + one linear layer; called like :class:`~clearct.pretrain.moco.MoCo` by the training loop."""

    pos_weight: torch.Tensor  # a buffer, declared: the type checker would see nn.Module.__getattr__

    def __init__(self, trunk: nn.Module, embed_dim: int, num_labels: int, pos_weight: torch.Tensor):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(embed_dim, num_labels)
        self.register_buffer("pos_weight", pos_weight.float())

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, m: float, targets: torch.Tensor, **_: object) -> torch.Tensor:
        """The loss of one view per slice (``x2``, the loader's copy of it, and ``m`` are unused: one forward per
        sample, so a supervised step costs a third of a MoCo step and the ceiling gets more steps per minute)."""
        logits = self.head(self.trunk(x1))
        with torch.autocast(x1.device.type, enabled=False):
            return slice_bce(logits.float(), targets.float(), self.pos_weight)

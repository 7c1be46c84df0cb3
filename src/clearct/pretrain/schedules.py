"""Per-step schedules of MoCo v3: learning rate (linear warmup, then half-cosine) and momentum (half-cosine to 1).

``epoch`` is fractional (epoch + step / steps_per_epoch) so both change every step, as in MoCo v3.
"""

from __future__ import annotations

import math


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """The linear scaling rule of MoCo v3: lr = base × batch / 256 (batch = global batch over all ranks)."""
    return base_lr * batch_size / 256


def learning_rate(epoch: float, *, base_lr: float, batch_size: int, epochs: int, warmup_epochs: float) -> float:
    """Learning rate at (fractional) ``epoch``: linear warmup over ``warmup_epochs``, then cosine decay to 0."""
    peak = scaled_lr(base_lr, batch_size)
    if epoch < warmup_epochs:
        return peak * epoch / warmup_epochs
    return peak * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))


def momentum(epoch: float, *, m0: float, epochs: int) -> float:
    """Momentum of the key encoder: m0 at epoch 0 rising to 1 at the end by a half-cosine."""
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)) * (1.0 - m0)

"""Pieces shared by the training loops of the model families (MIL on features, finetune3d on volumes)."""

from __future__ import annotations

import copy
import math
from typing import Any


class EarlyStopping:
    """Keep the weights of the epoch with the lowest validation loss; stop after ``patience`` epochs without a
    better one (improvements smaller than 1e-6 do not count)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = math.inf
        self.best_epoch = 0
        self.state: dict[str, Any] | None = None
        self.stale = 0

    def update(self, model: Any, val_loss: float, epoch: int) -> bool:
        """Record one epoch's validation loss; True when training should stop."""
        if val_loss < self.best - 1e-6:
            self.best, self.best_epoch, self.stale = val_loss, epoch, 0
            self.state = copy.deepcopy(model.state_dict())
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self, model: Any) -> None:
        """Load the best epoch's weights (no-op when no validation loss was recorded)."""
        if self.state is not None:
            model.load_state_dict(self.state)

"""The training loop shared by the model families (MIL on features, finetune3d on volumes)."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from tqdm import tqdm

LOG = logging.getLogger("clearct")


def adamw(params: Iterable[Any], *, lr: float, weight_decay: float) -> Any:
    """AdamW with the fused (one kernel for all parameters) update: the per-parameter loop launches ≈ 6 small
    ops per tensor per step, which stall when other processes hold the cores (benchmarks/RESULTS.md "mil")."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)


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


def run_epochs(model: Any, opt: Any, *, epochs: int, patience: int, batches: Callable[[], Iterable[Any]],
               step_loss: Callable[[Any], tuple[Any, int]], val_loss: Callable[[], float] | None,
               desc: str) -> list[dict]:
    """The epoch loop of both trainers: one optimizer step per batch (``step_loss(batch)`` → loss tensor and the
    batch's size), a validation loss per epoch, early stopping with the best epoch's weights restored, a progress
    bar and a log line per epoch. ``batches()`` is called at the start of every epoch. Returns the history
    ``[{"epoch", "train_loss", "val_loss", "steps"}]``; the model is left in eval mode."""
    stopper, history, steps = EarlyStopping(patience), [], 0
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", leave=False)
    for epoch in bar:
        model.train()
        total, seen = 0.0, 0
        for batch in batches():
            loss, size = step_loss(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * size
            seen += size
            steps += 1
        train_loss = total / max(seen, 1)
        vloss = val_loss() if val_loss is not None else math.nan
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": vloss, "steps": steps})
        LOG.info("%s epoch %d: train loss %.4f, val loss %.4f", desc, epoch, train_loss, vloss)
        bar.set_postfix(train=f"{train_loss:.3f}", val=f"{vloss:.3f}")
        if val_loss is not None and stopper.update(model, vloss, epoch):
            LOG.info("%s: early stop after epoch %d (best val loss %.4f)", desc, epoch, stopper.best)
            break
    stopper.restore(model)
    model.eval()
    return history

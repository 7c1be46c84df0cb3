"""Loss functions as pure functions of tensors (one per task family)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_bce(logits: torch.Tensor, y: torch.Tensor, pos_weight: torch.Tensor | None) -> torch.Tensor:
    """Multi-label BCE; ``pos_weight`` (T,) = n_negative / n_positive per target on the training part (None:
    unweighted)."""
    return F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)


def weighted_ce(logits: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy with class weights (None: unweighted), binary or multi-class; ``y``: class indices."""
    return F.cross_entropy(logits, y.long(), weight=class_weight)


def cox_partial_likelihood(risk: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood (Breslow ties), averaged over events.

    ``risk`` (B,) log hazard ratios, ``time`` (B,), ``event`` (B,) 1 = event, 0 = censored. The risk set of
    subject i is every j with t_j ≥ t_i. A batch without events contributes 0 (with a gradient path kept).
    """
    at_risk = time[None, :] >= time[:, None]  # (i, j): j still at risk at t_i
    log_risk_set = torch.logsumexp(risk[None, :].masked_fill(~at_risk, float("-inf")), dim=1)
    events = event.float()
    return -((risk - log_risk_set) * events).sum() / events.sum().clamp(min=1.0)


def regression_loss(pred: torch.Tensor, y: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """L1 (default, robust) or MSE on standardised targets."""
    return F.l1_loss(pred, y) if kind == "l1" else F.mse_loss(pred, y)

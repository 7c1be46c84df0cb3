"""The MoCo v3 / LECL contrastive loss (one direction), a pure function of tensors.

LECL (the paper's eq. 2), for a query q with positive key k+, in-batch keys k_i and lesion (key-slice) keys l_j:

    L = −log( ψ(q,k+) / (Σ_i ψ(q,k_i) + λ Σ_j ψ(q,l_j)) ),   ψ(a,b) = exp(cos(a,b)/τ)

The lesion keys are the momentum-encoder embeddings of the batch's lesion slices, i.e. a subset of the k_i, so
in logit space the paper's denominator is Σ_i (1 + λ·m_i)·ψ(q,k_i) with m_i the lesion mask.

``variant="paper"`` (default) implements eq. 2. ``variant="official"`` follows the authors' code, which appends
λ·cos(q,l_j)/τ as extra logits, i.e. ψ(q,l_j)^λ inside the sum; both agree only at λ = 1. In both variants the
query's own positive is left out of the lesion sum unless ``include_own_positive=True``.
With no lesion mask (or an all-zero one, or λ = 0 in the paper variant) the loss is plain MoCo v3.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Variant = Literal["paper", "official"]


def contrastive_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    tau: float,
    lesion_mask: torch.Tensor | None = None,
    lam: float = 0.0,
    variant: Variant = "paper",
    include_own_positive: bool = False,
    offset: int = 0,
) -> torch.Tensor:
    """One direction of the MoCo v3 / LECL loss, scaled by 2τ as in MoCo v3.

    Args:
        q: (b, d) queries of this process (predictor outputs of the query branch).
        k: (N, d) keys of the whole global batch (momentum encoder, gathered over ranks by the caller); the
            positive of ``q[i]`` is ``k[offset + i]``.
        tau: temperature τ.
        lesion_mask: (N,) bool/0-1 mask over ``k`` marking the keys that are lesion crops (key slices).
        lam: λ, weight of the lesion term.
        variant: ``"paper"`` (λ·ψ, eq. 2) or ``"official"`` (ψ^λ, the authors' code).
        include_own_positive: also count the own positive in the lesion sum when it is a lesion key.
        offset: index in ``k`` of this process's first row (rank × local batch under torchrun).

    Returns:
        Scalar: mean over the b queries of the cross-entropy, times 2τ.
    """
    if variant not in ("paper", "official"):
        raise ValueError(f"unknown LECL variant {variant!r} (paper or official)")
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    logits = q @ k.t() / tau  # (b, N)
    rows = torch.arange(q.shape[0], device=q.device)
    labels = rows + offset
    positive = logits[rows, labels]
    if lesion_mask is None:
        return (torch.logsumexp(logits, dim=1) - positive).mean() * (2 * tau)
    mask = lesion_mask.to(device=q.device, dtype=torch.bool).unsqueeze(0).expand_as(logits).clone()
    if not include_own_positive:
        mask[rows, labels] = False
    if variant == "paper":
        # Σ_i (1 + λ m_i) e^{l_i}: a lesion key's logit gains log(1 + λ) in the denominator.
        terms = logits + torch.where(mask, torch.log1p(logits.new_tensor(lam)), logits.new_zeros(()))
    else:
        # the authors' code: λ·l_j appended as extra logits for the lesion keys (e^{λ l_j} = ψ^λ).
        terms = torch.cat([logits, torch.where(mask, lam * logits, logits.new_tensor(float("-inf")))], dim=1)
    return (torch.logsumexp(terms, dim=1) - positive).mean() * (2 * tau)

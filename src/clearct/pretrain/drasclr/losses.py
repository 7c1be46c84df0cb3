"""DrasCLR's two InfoNCE losses and the location-binned queue of negatives (MoCo v2 style).

- Local loss (same anatomical patch, two augmented views): for query q and key k of one patch, with negatives
  n_m drawn from the queue of keys seen at the same location in other scans,
  ``L_loc = −log( e^{q̂·k̂/τ} / (e^{q̂·k̂/τ} + Σ_m e^{q̂·n̂_m/τ}) )``.
- Neighbour loss (disease spanning larger regions): the R nearest patches r_j of the anchor, encoded by the
  query encoder, are pulled toward the anchor's key together:
  ``L_nbr = −log( e^{Σ_j r̂_j·k̂/τ} / (e^{Σ_j r̂_j·k̂/τ} + Σ_m e^{Σ_j r̂_j·n̂_m/τ}) )``,
  i.e. the local loss with the anchor replaced by s = Σ_j r̂_j (sum of unit vectors, not renormalised).
  This is the form of the authors' public code (sum over neighbours inside the exponent); total loss is
  ``L_loc + β L_nbr``.

All functions are pure: tensors in, scalar out; hats are L2 normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(anchor: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean over rows of −log softmax at the positive: anchor (B, D) as given, key (B, D), negatives
    (B, M, D) per row or (M, D) shared; key and negatives are L2-normalised here, the anchor is not."""
    key = F.normalize(key, dim=-1)
    negatives = F.normalize(negatives, dim=-1)
    pos = (anchor * key).sum(-1, keepdim=True)
    neg = anchor @ negatives.T if negatives.ndim == 2 else torch.einsum("bd,bmd->bm", anchor, negatives)
    logits = torch.cat([pos, neg], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def local_contrastive_loss(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, *, tau: float) -> torch.Tensor:
    """L_loc for queries q (B, D) and keys k (B, D) of the same patches."""
    return info_nce(F.normalize(q, dim=-1), k, negatives, tau)


def neighbour_contrastive_loss(
    r: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor, *, tau: float
) -> torch.Tensor:
    """L_nbr for neighbour embeddings r (B, R, D) of each anchor and the anchors' keys k (B, D)."""
    return info_nce(F.normalize(r, dim=-1).sum(1), k, negatives, tau)


class LocationQueue:
    """A ring buffer of keys per location bin: (bins, size, D), so negatives come from the same anatomy.

    The paper keeps one queue per atlas patch position; without registration clearct bins the normalised
    location into ``bins_per_axis``³ cells (1 gives a single MoCo queue).
    """

    def __init__(self, bins_per_axis: int, size: int, dim: int, generator: torch.Generator | None = None):
        self.bins_per_axis = bins_per_axis
        self.keys = F.normalize(torch.randn(bins_per_axis**3, size, dim, generator=generator), dim=-1)
        self.ptr = torch.zeros(bins_per_axis**3, dtype=torch.long)

    def bin_of(self, loc: torch.Tensor) -> torch.Tensor:
        """(B, 3) locations in [−1, 1] → (B,) bin indices."""
        n = self.bins_per_axis
        cell = ((loc.float() + 1) / 2 * n).floor().long().clamp(0, n - 1)
        return (cell[:, 0] * n + cell[:, 1]) * n + cell[:, 2]

    def negatives(self, bins: torch.Tensor) -> torch.Tensor:
        """(B, size, D) queued keys of each row's bin."""
        return self.keys[bins.to(self.keys.device)]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, bins: torch.Tensor) -> None:
        """Write ``keys`` (B, D) into their bins' rings, oldest first out."""
        keys = F.normalize(keys.detach().float(), dim=-1).to(self.keys.device)
        bins = bins.to(self.keys.device)
        size = self.keys.shape[1]
        for b in bins.unique():
            rows = keys[bins == b][-size:]
            slots = (self.ptr[b] + torch.arange(len(rows))) % size
            self.keys[b, slots] = rows
            self.ptr[b] = (self.ptr[b] + len(rows)) % size

    def to(self, device: torch.device) -> LocationQueue:
        self.keys, self.ptr = self.keys.to(device), self.ptr.to(device)
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"keys": self.keys.cpu(), "ptr": self.ptr.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.keys, self.ptr = state["keys"].to(self.keys.device), state["ptr"].to(self.keys.device)

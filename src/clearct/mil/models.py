"""MIL models: attention-based MIL (Ilse et al. 2018, eq. 3 of the paper) and two baselines.

Every model maps a padded batch ``x`` (B, N, D), ``mask`` (B, N) bool (True = real instance) and ``window``
(B, N) int64 to ``(logits (B, C), attention (B, N))``; the baselines return uniform "attention" so callers need
no special case. The math of the pooling lives in pure functions (:func:`masked_softmax`, :func:`attention_pool`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

MODEL_KINDS = ("abmil", "gated", "meanpool", "mlp")


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis where padding (``mask`` False) gets exactly zero weight.

    A row without any real instance returns all zeros instead of NaN.
    """
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


def attention_pool(h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """z = Σ_k a_k h_k for a batch: ``h`` (B, N, L), ``weights`` (B, N) → (B, L)."""
    return torch.einsum("bn,bnl->bl", weights, h)


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over real instances; returns the pooled vectors and the uniform weights used."""
    weights = mask.float() / mask.float().sum(dim=1, keepdim=True).clamp(min=1.0)
    return attention_pool(h, weights), weights


class FeatureScaler(nn.Module):
    """x ↦ (x − mean) / std per feature dimension; the statistics are fitted on the training instances and saved
    with the model (buffers), so deploy and predict apply the same transform.

    Why: frozen-encoder features often share a large common component and spread most of their variance over a
    few directions (a ViT's normed class token: per-dimension means larger than the spread between slices); the
    first linear layer then starts saturated and the lesion directions barely move under a small learning rate.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, feats: Iterable[np.ndarray]) -> None:
        """Mean and standard deviation over every row of every (N, D) array (float64 sums, one pass)."""
        n, total, squares = 0, 0.0, 0.0
        for f in feats:
            f = np.asarray(f, dtype=np.float64)
            n += f.shape[0]
            total = total + f.sum(axis=0)
            squares = squares + (f * f).sum(axis=0)
        if n == 0:
            return
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(np.where(std > 1e-6, std, 1.0)))  # constant features pass unscaled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inv = 1.0 / self.std  # x / std − mean / std in one pass over x
        return torch.addcmul(-self.mean * inv, x.to(inv.dtype), inv)


def input_scaler(dim: int, standardize: bool) -> nn.Module:
    return FeatureScaler(dim) if standardize else nn.Identity()


class ClassifierHead(nn.Module):
    """The authors' head: LayerNorm → Linear → Dropout → SiLU → Linear."""

    def __init__(self, dim: int, n_out: int, hidden: int = 256, dropout: float = 0.25):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.Dropout(dropout), nn.SiLU(), nn.Linear(hidden, n_out)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class InstanceEncoder(nn.Module):
    """Linear(D, L) + ReLU applied to every instance, with an optional learned embedding of the HU window."""

    def __init__(self, in_dim: int, hidden: int, n_windows: int, window_embedding: bool, dropout: float):
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden)
        self.window = nn.Embedding(n_windows, hidden) if window_embedding else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        if self.window is not None:
            h = h + self.window(window)
        return self.drop(torch.relu(h))


class ABMIL(nn.Module):
    """a_k = softmax_k(wᵀ tanh(V h_k)) (``gated``: wᵀ(tanh(V h_k) ⊙ sigmoid(U h_k))), z = Σ_k a_k h_k → head."""

    def __init__(self, in_dim: int, n_out: int, *, hidden: int = 256, attn_hidden: int = 256, gated: bool = False,
                 n_windows: int = 1, window_embedding: bool = False, dropout: float = 0.25, standardize: bool = False):
        super().__init__()
        self.scaler = input_scaler(in_dim, standardize)
        self.encoder = InstanceEncoder(in_dim, hidden, n_windows, window_embedding, dropout)
        self.V = nn.Linear(hidden, attn_hidden)
        self.U = nn.Linear(hidden, attn_hidden) if gated else None
        self.w = nn.Linear(attn_hidden, 1)
        self.head = ClassifierHead(hidden, n_out, hidden, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(self.scaler(x), window)
        gate = torch.tanh(self.V(h))
        if self.U is not None:
            gate = gate * torch.sigmoid(self.U(h))
        a = masked_softmax(self.w(gate).squeeze(-1), mask)
        return self.head(attention_pool(h, a)), a


class MeanPoolMLP(nn.Module):
    """Baseline: the same instance encoder, mean pooling instead of attention, the same head."""

    def __init__(self, in_dim: int, n_out: int, *, hidden: int = 256, n_windows: int = 1,
                 window_embedding: bool = False, dropout: float = 0.25, standardize: bool = False, **_: object):
        super().__init__()
        self.scaler = input_scaler(in_dim, standardize)
        self.encoder = InstanceEncoder(in_dim, hidden, n_windows, window_embedding, dropout)
        self.head = ClassifierHead(hidden, n_out, hidden, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, a = masked_mean(self.encoder(self.scaler(x), window), mask)
        return self.head(z), a


class MLP(nn.Module):
    """Baseline for one vector per scan (3D encoders, N = 1): the mean of the instances through the head MLP."""

    def __init__(self, in_dim: int, n_out: int, *, hidden: int = 256, dropout: float = 0.25, standardize: bool = False,
                 **_: object):
        super().__init__()
        self.scaler = input_scaler(in_dim, standardize)
        self.head = ClassifierHead(in_dim, n_out, hidden, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, a = masked_mean(self.scaler(x), mask)
        return self.head(z), a


def build_model(kind: str, in_dim: int, n_out: int, *, n_windows: int = 1, window_embedding: bool = False,
                hidden: int = 256, dropout: float = 0.25, standardize: bool = False) -> nn.Module:
    """One factory for every model kind (``abmil``, ``gated``, ``meanpool``, ``mlp``); ``standardize`` puts a
    :class:`FeatureScaler` in front (fit it with ``model.scaler.fit`` before training)."""
    common = {"hidden": hidden, "n_windows": n_windows, "window_embedding": window_embedding, "dropout": dropout,
              "standardize": standardize}
    if kind in ("abmil", "gated"):
        return ABMIL(in_dim, n_out, attn_hidden=hidden, gated=kind == "gated", **common)
    if kind == "meanpool":
        return MeanPoolMLP(in_dim, n_out, **common)
    if kind == "mlp":
        return MLP(in_dim, n_out, **common)
    raise ValueError(f"unknown model kind {kind!r} (choose from {', '.join(MODEL_KINDS)})")

"""MIL models: attention-based MIL (Ilse et al. 2018, eq. 3 of the paper) and two baselines, in one registry.

Every model maps a padded batch ``x`` (B, N, D), ``mask`` (B, N) bool (True = real instance) and ``window``
(B, N) int64 to ``(logits (B, C), attention (B, N))``; the baselines return uniform "attention" so callers need
no special case. The math of the pooling lives in pure functions (:func:`masked_softmax`, :func:`attention_pool`).

A new model is a builder registered here with :func:`register_mil_model`; ``crossval --model NAME`` then trains
it and the tests run over :func:`list_mil_models`. A builder takes ``in_dim`` and ``n_out`` and, by keyword, those
of ``n_windows``, ``window_embedding``, ``hidden``, ``dropout`` and ``standardize`` it uses; it is passed only what
it declares. Training fits ``model.scaler`` when ``standardize`` is on (the default), so every builder declares
``standardize`` and sets ``self.scaler = input_scaler(in_dim, standardize)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from clearct.common.registry import Registry

MIL_MODELS: Registry[Callable[..., nn.Module]] = Registry("MIL model")
register_mil_model = MIL_MODELS.register  # a builder: a class or a function
list_mil_models = MIL_MODELS.names
MODEL_SETTINGS = ("n_windows", "window_embedding", "hidden", "dropout", "standardize")  # what builders may declare


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

    mean: torch.Tensor  # buffers, declared: the type checker would see nn.Module.__getattr__
    std: torch.Tensor

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


@register_mil_model("abmil")
class ABMIL(nn.Module):
    """a_k = softmax_k(wᵀ tanh(V h_k)) (``gated``: wᵀ(tanh(V h_k) ⊙ sigmoid(U h_k))), z = Σ_k a_k h_k → head."""

    def __init__(self, in_dim: int, n_out: int, *, hidden: int = 256, attn_hidden: int | None = None, gated: bool = False,
                 n_windows: int = 1, window_embedding: bool = False, dropout: float = 0.25, standardize: bool = False):
        super().__init__()
        self.scaler = input_scaler(in_dim, standardize)
        self.encoder = InstanceEncoder(in_dim, hidden, n_windows, window_embedding, dropout)
        attn_hidden = attn_hidden or hidden
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


@register_mil_model("gated")
def gated_abmil(in_dim: int, n_out: int, **kw: object) -> ABMIL:
    """ABMIL with gated attention (Ilse et al. 2018, eq. 9)."""
    return ABMIL(in_dim, n_out, gated=True, **kw)  # type: ignore[arg-type]


@register_mil_model("meanpool")
class MeanPoolMLP(nn.Module):
    """Baseline: the same instance encoder, mean pooling instead of attention, the same head."""

    def __init__(self, in_dim: int, n_out: int, *, hidden: int = 256, n_windows: int = 1,
                 window_embedding: bool = False, dropout: float = 0.25, standardize: bool = False):
        super().__init__()
        self.scaler = input_scaler(in_dim, standardize)
        self.encoder = InstanceEncoder(in_dim, hidden, n_windows, window_embedding, dropout)
        self.head = ClassifierHead(hidden, n_out, hidden, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, a = masked_mean(self.encoder(self.scaler(x), window), mask)
        return self.head(z), a


@register_mil_model("mlp")
class MLP(nn.Module):
    """Baseline for one vector per scan (3D encoders, N = 1): the mean of the instances through the head MLP."""

    def __init__(self, in_dim: int, n_out: int, *, hidden: int = 256, dropout: float = 0.25, standardize: bool = False):
        super().__init__()
        self.scaler = input_scaler(in_dim, standardize)
        self.head = ClassifierHead(in_dim, n_out, hidden, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, a = masked_mean(self.scaler(x), mask)
        return self.head(z), a


def build_model(kind: str, in_dim: int, n_out: int, **settings: object) -> nn.Module:
    """The registered model ``kind`` with those of ``settings`` (``n_windows``, ``window_embedding``, ``hidden``,
    ``dropout``, ``standardize``) its builder declares; ``standardize`` puts a :class:`FeatureScaler` in front (fit
    it with ``model.scaler.fit`` before training)."""
    builder = MIL_MODELS.get(kind)
    unknown = sorted(set(settings) - set(MODEL_SETTINGS))
    if unknown:
        raise TypeError(f"build_model got unknown setting(s) {unknown} (known: {', '.join(MODEL_SETTINGS)})")
    accepted = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    return builder(in_dim, n_out, **{k: v for k, v in settings.items() if takes_any or k in accepted})

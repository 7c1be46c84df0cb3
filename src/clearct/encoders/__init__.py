"""Slice encoders: one registry serves every command (pretrain, extract, predict).

``create_encoder(name_or_run_dir, *, weights=None, image_size=None)`` returns an ``nn.Module`` mapping (B, 3, H, W) → (B, D) with the
attributes ``embed_dim``, ``input_size``, ``mean``, ``std``, ``is_3d``, ``encoder_name`` and ``weights_sha256``.
Names: see :func:`list_encoders` and docs/encoders.md.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from clearct.common.errors import ClearctError
from clearct.encoders import builtin  # noqa: F401  (fills the registry)
from clearct.encoders.registry import INIT_SEED, RANDOM_INIT, build, list_encoders, register_encoder
from clearct.encoders.run_folder import load_encoder_run, save_encoder_run

RANDOM_PREFIX = "random:"


def create_encoder(
    name_or_run_dir: str | Path, *, weights: str | Path | None = None, image_size: int | None = None,
    allow_resize: bool = False, seed: int = INIT_SEED,
) -> nn.Module:
    """A registry encoder, a clearct run folder, ``timm:<model>`` or ``random:<arch>``, at ``image_size`` px.

    ``image_size=None`` keeps the registry's default (the paper's size) or the size a run folder was trained at.
    Every 2D encoder takes another size (CNNs as they are, ViTs with their position embeddings resampled); a run
    folder asked for a size other than its training size is an error unless ``allow_resize``.
    ``weights`` (a local .safetensors file or torch checkpoint) is loaded strictly; without it the encoder is
    randomly initialised from ``seed`` (the same name and seed give the same weights; the global RNG is not
    touched). Nothing is ever downloaded.
    """
    spec = str(name_or_run_dir)
    path = Path(spec)
    if path.is_dir():
        if weights is not None:
            raise ClearctError("a run folder brings its own weights; leave out --weights", path)
        return load_encoder_run(path, image_size=image_size, allow_resize=allow_resize)
    if spec.startswith(RANDOM_PREFIX):
        if weights is not None:
            raise ClearctError(f"{spec} asks for random initialisation; leave out --weights")
        return build(spec[len(RANDOM_PREFIX) :], seed=seed, image_size=image_size)
    if "/" in spec or "\\" in spec:
        raise ClearctError("no such encoder run folder", path)
    return build(spec, weights=weights, seed=seed, image_size=image_size)


__all__ = [
    "INIT_SEED",
    "RANDOM_INIT",
    "create_encoder",
    "list_encoders",
    "load_encoder_run",
    "register_encoder",
    "save_encoder_run",
]

"""Loading local weights into a registry encoder: strict, with one clear line for every kind of mismatch.

Accepted files: ``.safetensors``, or a torch checkpoint read with ``torch.load(weights_only=True)`` — either a
plain state dict or one nested under ``state_dict`` / ``model`` / ``module`` (as MoCo v3 and timm training scripts
save them). A prefix shared by the matching keys (``module.``, ``module.base_encoder.`` …) is found and removed, so a
MoCo v3 checkpoint loads its query encoder. Keys under an encoder's ``ignore_prefixes`` (a classifier head the
encoder does not have) are dropped; anything else missing, unexpected or of the wrong shape is an error — except a
ViT's ``pos_embed`` from another input size: a fixed table (requires_grad off, e.g. MoCo v3's sin-cos) is rebuilt
for the new grid as the module has it, a learned one is resampled with timm's ``resample_abs_pos_embed``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch import nn

from clearct.common.errors import ClearctError
from clearct.encoders.baselines.common import read_state

NESTED = ("state_dict", "model", "module", "encoder")


def tensors_of(state: dict, path: str | Path) -> dict[str, torch.Tensor]:
    """The flat name → tensor mapping of a loaded checkpoint (unwrapping one nesting level if needed)."""
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    for key in NESTED:
        inner = state.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    raise ClearctError(f"no state dict of tensors in the checkpoint (top-level keys: {list(state)[:6]})", path)


def common_prefix(keys: list[str], wanted: set[str]) -> str:
    """The prefix that, removed, turns the most checkpoint keys into module keys ('' when they match as is)."""
    votes: Counter[str] = Counter()
    for key in keys:
        for name in wanted:
            if key.endswith(name) and (len(key) == len(name) or key[-len(name) - 1] == "."):
                votes[key[: len(key) - len(name)]] += 1
    return votes.most_common(1)[0][0] if votes else ""


def match_state(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path,
                ignore_prefixes: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """``state`` renamed to ``module``'s keys; a ClearctError naming missing/unexpected/mis-shaped tensors.
    Keys under ``ignore_prefixes`` or the module's own ``ignore_prefixes`` are dropped."""
    own = module.state_dict()
    prefix = common_prefix(list(state), set(own))
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    ignore = tuple(getattr(module, "ignore_prefixes", ())) + ignore_prefixes
    if ignore:
        state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    state = fit_pos_embed(module, state)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
    if problems:
        name = getattr(module, "encoder_name", type(module).__name__)
        where = f" after removing the prefix {prefix!r}" if prefix else ""
        raise ClearctError(f"weights do not fit encoder {name}{where}: {'; '.join(problems)}", path)
    return state


def fit_pos_embed(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with a ``pos_embed`` of another token grid made to fit ``module`` (see the module docstring)."""
    own = getattr(module, "pos_embed", None)
    theirs = state.get("pos_embed")
    if not isinstance(own, torch.Tensor) or theirs is None or theirs.shape == own.shape:
        return state
    if theirs.ndim != 3 or theirs.shape[-1] != own.shape[-1]:
        return state  # not a token table of the same width: reported as a shape mismatch
    if not own.requires_grad:
        return {**state, "pos_embed": own.detach().clone()}
    from timm.layers import resample_abs_pos_embed

    prefix = int(getattr(module, "num_prefix_tokens", 1))
    # timm's patch embedding; nn.Module's __getattr__ types its attributes as Tensor | Module
    grid = tuple(module.patch_embed.grid_size)  # type: ignore[union-attr, arg-type]
    return {**state, "pos_embed": resample_abs_pos_embed(theirs, list(grid), num_prefix_tokens=prefix)}


def load_weights(module: nn.Module, path: str | Path) -> nn.Module:
    """Load the local weight file ``path`` into ``module`` (strictly); the registry records its sha256."""
    path = Path(path)
    if not path.is_file():
        raise ClearctError("weights file not found", path)
    state = match_state(module, tensors_of(read_state(path), path), path)
    module.load_state_dict(state, strict=True)
    return module

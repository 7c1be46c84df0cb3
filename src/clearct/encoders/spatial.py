"""The last spatial feature map of a 2D encoder, with the encoder's own path from that map to its embedding.

Registry contract: a 2D encoder that has a spatial map carries ``spatial_map``, a :class:`SpatialTap` naming the
module whose output (or input) is the map and how the map is laid out there. :func:`spatial_features` runs the
encoder's own ``forward`` with a hook on that module that hands the rest of the network a fresh leaf tensor holding
the map: gradients of anything computed from the embedding can then be taken with respect to the map, and, with
frozen weights, autograd records nothing before it (the network up to the map costs one inference pass).

Where each family's map is: the last ResNet stage (``backbone.layer4``); for timm CNNs and MambaOut the input of
the global pooling (``global_pool`` or the pooling ``head``); for ViTs (``vit_conv_*``, timm ViTs, BiomedCLIP's
trunk) the patch tokens entering the last block, reshaped to the token grid (class/prefix tokens excluded: the
last block's output patch tokens no longer reach a class-token embedding); for VMamba the normed stage-4 map before
the average; for SAM2 the stride-16 FPN level before its mean. 3D encoders and encoders with their own instances
(DrasCLR patches) have none.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from clearct.common.errors import ClearctError

Layout = Literal["nchw", "nhwc", "tokens"]


@dataclass(frozen=True)
class SpatialTap:
    """Where an encoder's last spatial map is: the ``input`` or ``output`` of the submodule ``layer``, laid out as
    (B, C, h, w) ``nchw``, (B, h, w, C) ``nhwc``, or ``tokens`` (B, prefix + h·w, C) with ``prefix`` leading
    class/register tokens that are not part of the map."""

    layer: str
    capture: Literal["input", "output"] = "output"
    layout: Layout = "nchw"
    prefix: int = 0

    @property
    def name(self) -> str:
        """How heatmap files record the layer, e.g. ``backbone.layer4:output``."""
        return f"{self.layer}:{self.capture}"


def no_map_error(encoder: nn.Module, why: str = "") -> ClearctError:
    name = getattr(encoder, "encoder_name", type(encoder).__name__)
    return ClearctError(f"{name} has no spatial feature map; heatmaps need a 2D encoder with one" + why)


def spatial_tap(encoder: nn.Module) -> SpatialTap:
    """The encoder's tap, or the one-line error for 3D encoders, patch encoders and encoders without a map."""
    tap = getattr(encoder, "spatial_map", None)
    if getattr(encoder, "is_3d", False) or hasattr(encoder, "embed_scan") or not isinstance(tap, SpatialTap):
        raise no_map_error(encoder)
    return tap


def timm_tap(model: nn.Module, root: str = "") -> SpatialTap | None:
    """The tap of a timm model (``root``: its path inside the encoder): the patch tokens entering the last block of
    a token model, else the input of its global pooling (``global_pool``, or a ``head`` that pools), in the model's
    ``output_fmt`` (MambaOut and Swin are NHWC). None for a model with neither."""
    blocks, prefix = getattr(model, "blocks", None), getattr(model, "num_prefix_tokens", None)
    if prefix is not None and isinstance(blocks, nn.Sequential) and len(blocks):
        return SpatialTap(f"{root}blocks.{len(blocks) - 1}", "input", "tokens", int(prefix))
    layout: Layout = "nhwc" if str(getattr(model, "output_fmt", "NCHW")).upper().endswith("NHWC") else "nchw"
    for name in ("global_pool", "head"):
        if isinstance(getattr(model, name, None), nn.Module):
            return SpatialTap(f"{root}{name}", "input", layout)
    return None


def to_map(t: torch.Tensor, tap: SpatialTap) -> torch.Tensor:
    """The captured tensor as (B, C, h, w) (a view where the layout allows one)."""
    if tap.layout == "nchw":
        return t
    if tap.layout == "nhwc":
        return t.permute(0, 3, 1, 2)
    tokens = t[:, tap.prefix :]
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} patch tokens do not form a square grid")
    return tokens.transpose(1, 2).unflatten(2, (side, side))


def from_map(a: torch.Tensor, captured: torch.Tensor, tap: SpatialTap) -> torch.Tensor:
    """The inverse of :func:`to_map`: ``a`` (B, C, h, w) back in the captured layout (prefix tokens from
    ``captured``, as constants)."""
    if tap.layout == "nchw":
        return a
    if tap.layout == "nhwc":
        return a.permute(0, 2, 3, 1)
    return torch.cat([captured[:, : tap.prefix], a.flatten(2).transpose(1, 2)], dim=1)


@contextmanager
def _hooked(encoder: nn.Module, tap: SpatialTap, maps: list[torch.Tensor]) -> Iterator[None]:
    try:
        module = encoder.get_submodule(tap.layer)
    except AttributeError as exc:
        raise no_map_error(encoder, f" (no module {tap.layer!r})") from exc

    def swap(t: object) -> torch.Tensor:
        expected = 3 if tap.layout == "tokens" else 4
        if not isinstance(t, torch.Tensor) or t.ndim != expected:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise no_map_error(encoder, f" ({tap.name} gives {shape}, not a {tap.layout} map)")
        a = to_map(t.detach(), tap).requires_grad_(True)
        maps.append(a)
        return from_map(a, t.detach(), tap)

    if tap.capture == "output":
        handle = module.register_forward_hook(lambda _m, _args, out: swap(out))
    else:
        handle = module.register_forward_pre_hook(lambda _m, args: (swap(args[0]), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


def spatial_features(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(map (B, C, h, w), embedding (B, D)) of a batch through the encoder's own forward.

    The map is a leaf that requires grad, and the embedding is computed from it exactly as ``encoder(x)`` computes
    it; call with the encoder's weights frozen (``requires_grad_(False)``) so nothing before the map is recorded.
    """
    tap = spatial_tap(encoder)
    maps: list[torch.Tensor] = []
    with _hooked(encoder, tap, maps), torch.enable_grad():
        embedding = encoder(x)
    if len(maps) != 1:
        raise no_map_error(encoder, f" ({tap.name} ran {len(maps)} times in one forward)")
    return maps[0], embedding


def connected_map(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The map (B, C, h, w) of ``x`` through the encoder's forward, still connected to ``x`` (gradients of the map
    with respect to the input: where each cell looks)."""
    tap = spatial_tap(encoder)
    module = encoder.get_submodule(tap.layer)
    maps: list[torch.Tensor] = []
    if tap.capture == "output":
        handle = module.register_forward_hook(lambda _m, _args, out: maps.append(to_map(out, tap)))
    else:
        handle = module.register_forward_pre_hook(lambda _m, args: maps.append(to_map(args[0], tap)))
    try:
        with torch.enable_grad():
            encoder(x)
    finally:
        handle.remove()
    if len(maps) != 1:
        raise no_map_error(encoder, f" ({tap.name} ran {len(maps)} times in one forward)")
    return maps[0]

"""The one encoder registry: name → builder of an ``nn.Module`` mapping (B, 3, H, W) → (B, D).

Every encoder carries the attributes the other stages read: ``embed_dim``, ``input_size``, ``mean``, ``std``,
``is_3d``, ``encoder_name`` and ``weights_sha256`` (``"random-init"`` unless loaded from a file). A 2D encoder with a
spatial feature map also carries ``spatial_map`` (:class:`clearct.encoders.spatial.SpatialTap`), which heatmaps need.

A builder is a function with keyword arguments only; :func:`create_encoder` passes each of these when the builder
declares it: ``weights`` (a builder that reads its own weight format, e.g. a foundation baseline), ``variant``
(the text after ``family:`` for family entries such as ``timm:<model>``), ``info`` (the ``encoder.json`` of a run
folder, for architectures whose shape is stored there) and ``image_size`` (the input size in pixels, as timm's
``img_size``; ``None`` = the builder's default, the paper's size). A builder without ``image_size`` has a fixed input
size: asking for another one is an error. Builders without ``weights`` get local weights loaded by
:func:`clearct.encoders.weights.load_weights` (strict, with clear errors).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clearct.common.errors import ClearctError
from clearct.encoders.baselines.common import weights_digest
from clearct.encoders.weights import load_weights

RANDOM_INIT = "random-init"
# Random initialisation is drawn from this seed unless the caller gives one: every "random-init" encoder of a name
# has the same weights, so features recorded under weights_sha256 "random-init" are reproducible and comparable.
INIT_SEED = 0
REQUIRED = ("embed_dim", "input_size", "mean", "std", "is_3d", "encoder_name", "weights_sha256")


@dataclass(frozen=True)
class Entry:
    """A registered builder; ``family`` entries (``timm:``) take the rest of the name as ``variant``."""

    name: str
    build: Callable[..., nn.Module]
    family: bool = False

    def accepts(self, arg: str) -> bool:
        return arg in inspect.signature(self.build).parameters


_REGISTRY: dict[str, Entry] = {}


def register_encoder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder under ``name``; a name ending in ``:`` registers a family (``timm:``)."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name[:-1] if name.endswith(":") else name
        if key in _REGISTRY and _REGISTRY[key].build is not fn:
            raise ValueError(f"encoder {name!r} is registered twice")
        _REGISTRY[key] = Entry(key, fn, family=name.endswith(":"))
        return fn

    return wrap


def list_encoders() -> list[str]:
    """Registered names, families shown as ``family:<name>``."""
    return sorted(f"{e.name}:<name>" if e.family else e.name for e in _REGISTRY.values())


def registry_entries() -> list[Entry]:
    """Every registered entry, by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def lookup(name: str) -> tuple[Entry, str | None]:
    """The entry for ``name`` and the variant (the part after ``family:``), or a ClearctError listing names."""
    if name in _REGISTRY and not _REGISTRY[name].family:
        return _REGISTRY[name], None
    family, sep, variant = name.partition(":")
    if sep and family in _REGISTRY and _REGISTRY[family].family and variant:
        return _REGISTRY[family], variant
    raise ClearctError(f"unknown encoder {name!r}; known: {', '.join(list_encoders())}, or a run folder")


def describe(module: nn.Module, **attrs: Any) -> nn.Module:
    """Set the registry attributes (or other plain attributes a stage reads) on ``module``; those not given
    keep the module's own values. Plain values are set here, not as ``module.attr = value``: nn.Module's
    attribute typing admits only tensors and modules."""
    for key, value in attrs.items():
        setattr(module, key, value)
    for key, default in (("is_3d", False), ("weights_sha256", RANDOM_INIT)):
        if not hasattr(module, key):
            setattr(module, key, default)
    return module


@dataclass(frozen=True)
class EncoderInfo:
    """The registry attributes of a built encoder, typed (nn.Module types attributes as Tensor | Module)."""

    encoder_name: str
    weights_sha256: str
    embed_dim: int
    input_size: int
    mean: tuple[float, float, float]  # per input channel
    std: tuple[float, float, float]
    is_3d: bool


def encoder_info(module: nn.Module) -> EncoderInfo:
    """``module``'s registry attributes (every encoder :func:`build` returns has them)."""
    a = {key: getattr(module, key) for key in REQUIRED}
    (m0, m1, m2), (s0, s1, s2) = a["mean"], a["std"]
    return EncoderInfo(encoder_name=str(a["encoder_name"]), weights_sha256=str(a["weights_sha256"]),
                       embed_dim=int(a["embed_dim"]), input_size=int(a["input_size"]),
                       mean=(float(m0), float(m1), float(m2)), std=(float(s0), float(s1), float(s2)),
                       is_3d=bool(a["is_3d"]))


def build(
    name: str, *, weights: str | Path | None = None, info: dict | None = None, seed: int = INIT_SEED,
    image_size: int | None = None,
) -> nn.Module:
    """Build the registered encoder ``name`` (random init unless ``weights``) at ``image_size`` and check it.

    The initialisation is drawn under ``torch.manual_seed(seed)`` in a forked CPU RNG, so the same name and seed
    give the same weights and the caller's global RNG stream is left as it was.
    """
    entry, variant = lookup(name)
    kwargs: dict[str, Any] = {}
    if variant is not None:
        kwargs["variant"] = variant
    if info is not None and entry.accepts("info"):
        kwargs["info"] = info
    own_weights = entry.accepts("weights")
    if own_weights:
        kwargs["weights"] = weights
    if image_size is not None and entry.accepts("image_size"):
        if int(image_size) < 16:
            raise ClearctError(f"image size {image_size} px is too small for encoder {name!r} (at least 16)")
        kwargs["image_size"] = int(image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = describe(entry.build(**kwargs))
    if not getattr(module, "encoder_name", None):
        describe(module, encoder_name=name)
    if weights is not None and not own_weights:
        load_weights(module, weights)
        describe(module, weights_sha256=weights_digest(weights))
    missing = [a for a in REQUIRED if not hasattr(module, a)]
    if missing:
        raise TypeError(f"encoder {name!r} lacks the registry attributes {missing}")
    input_size = encoder_info(module).input_size
    if image_size is not None and int(image_size) != input_size:
        raise ClearctError(f"encoder {name!r} has a fixed input size of {input_size} px "
                           f"(asked for {image_size})")
    return module

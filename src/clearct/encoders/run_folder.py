"""Encoder run folders: ``RUN/encoder.safetensors`` (the trunk's weights) + ``RUN/encoder.json`` (how to rebuild it).

``encoder.json`` holds ``arch`` (a registry name), ``embed_dim``, ``input_size``, ``mean``/``std``, ``is_3d``,
``windows`` ([name, lo, hi] the encoder was trained on), ``weights_sha256`` of the safetensors file, the clearct
version, and under ``info`` whatever the caller passes (training config, data summary …). Both files are written
atomically, the weights first, so a run folder with an ``encoder.json`` always has its weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from clearct import __version__
from clearct.common.atomic import atomic_path, atomic_write_text
from clearct.common.errors import ClearctError
from clearct.common.runs import sha256_file
from clearct.encoders.registry import build, describe, encoder_info

WEIGHTS = "encoder.safetensors"
MANIFEST = "encoder.json"
FORMAT = "clearct-encoder/1"


def save_encoder_run(
    run_dir: str | Path,
    encoder: nn.Module,
    *,
    arch: str,
    windows: Sequence[Sequence[Any]],
    info: dict | None = None,
) -> Path:
    """Write ``encoder``'s weights and manifest into ``run_dir``; returns the manifest's path."""
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared or non-contiguous storage; a copy per tensor keeps the file self-contained.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in encoder.state_dict().items()}
    with atomic_path(run_dir / WEIGHTS, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "arch": arch})
    own = encoder_info(encoder)
    manifest = {
        "format": FORMAT,
        "arch": arch,
        "embed_dim": own.embed_dim,
        "input_size": own.input_size,
        "mean": list(own.mean),
        "std": list(own.std),
        "is_3d": bool(getattr(encoder, "is_3d", False)),
        "windows": [[str(w[0]), float(w[1]), float(w[2])] for w in windows],
        "weights_file": WEIGHTS,
        "weights_sha256": sha256_file(run_dir / WEIGHTS),
        "clearct_version": __version__,
        "info": info or {},
    }
    atomic_write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")
    return run_dir / MANIFEST


def read_manifest(run_dir: str | Path) -> dict:
    """The parsed ``encoder.json`` of a run folder, checked for the fields loading needs."""
    path = Path(run_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ClearctError(f"not an encoder run folder (no {MANIFEST})", run_dir) from exc
    except json.JSONDecodeError as exc:
        raise ClearctError(f"invalid JSON ({exc})", path) from exc
    missing = [k for k in ("arch", "embed_dim", "input_size", "windows") if k not in manifest]
    if missing:
        raise ClearctError(f"lacks the fields {missing}", path)
    return manifest


def load_encoder_run(run_dir: str | Path, *, image_size: int | None = None, allow_resize: bool = False) -> nn.Module:
    """Rebuild the run's architecture from the registry and load its weights (sha256 checked).

    The encoder runs at the size it was trained at; another ``image_size`` is refused unless ``allow_resize``
    (features at another size are other features: a model trained on one size should not silently get the other).
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    trained = int(manifest["input_size"])
    if image_size is not None and int(image_size) != trained and not allow_resize:
        raise ClearctError(f"the encoder was trained at {trained} px, not {image_size} px; leave out the image size "
                           "or allow resizing explicitly (--allow-resize)", run_dir / MANIFEST)
    weights = run_dir / manifest.get("weights_file", WEIGHTS)
    if not weights.is_file():
        raise ClearctError("weights file of the run is missing", weights)
    digest = sha256_file(weights)
    if manifest.get("weights_sha256") not in (None, digest):
        raise ClearctError(f"sha256 {digest[:12]}… differs from {MANIFEST}'s; the run folder is inconsistent",
                           weights)
    size = trained if image_size is None else int(image_size)
    encoder = build(manifest["arch"], weights=weights, info=manifest.get("info"), image_size=size)
    for key in ("embed_dim",):
        if int(getattr(encoder, key)) != int(manifest[key]):
            raise ClearctError(f"{key} {getattr(encoder, key)} of arch {manifest['arch']} differs from the "
                               f"manifest's {manifest[key]}", run_dir / MANIFEST)
    for key in ("mean", "std"):
        if key in manifest:
            setattr(encoder, key, tuple(float(v) for v in manifest[key]))
    return describe(encoder, windows=[(str(n), float(lo), float(hi)) for n, lo, hi in manifest["windows"]],
                    run_manifest=manifest, weights_sha256=digest)

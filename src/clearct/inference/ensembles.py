"""A trained output folder → its fold ensemble, whichever model family made it (``kind`` in ``model.json``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from clearct.common.errors import ClearctError
from clearct.finetune3d.store import VolumeEnsemble, load_volume_ensemble
from clearct.mil.store import MilEnsemble, load_mil_ensemble
from clearct.modeling.store import Ensemble, model_kind

LOADERS: dict[str, Callable[[Path, torch.device | str], MilEnsemble | VolumeEnsemble]] = {
    "mil": load_mil_ensemble,
    "finetune3d": load_volume_ensemble,
}


def load_ensemble(folder: Path, device: torch.device | str = "cpu") -> MilEnsemble | VolumeEnsemble:
    """All models under a crossval or finetune3d folder (``fold-*/model.json``), or a single model folder."""
    kind = model_kind(folder)
    if kind not in LOADERS:
        raise ClearctError(f"model.json names an unknown model family {kind!r} ({', '.join(LOADERS)})", folder)
    return LOADERS[kind](Path(folder), device)


def load_mil_models(folder: Path, command: str, device: torch.device | str = "cpu") -> MilEnsemble:
    """The MIL ensemble of a crossval folder: slice attention and one-scan prediction from features need MIL
    models."""
    ensemble = load_ensemble(folder, device)
    if not isinstance(ensemble, MilEnsemble):
        raise ClearctError(f"holds {ensemble.kind} models, which have no slice attention; {command} needs a "
                           "crossval folder (use deploy --scans for finetune3d models)", folder)
    return ensemble


def check_encoder(ensemble: Ensemble, encoder: dict, where: Path) -> None:
    """Features must come from the encoder the models were trained on (name, weights and input size)."""
    want = ensemble.encoder
    if (encoder["encoder"], encoder["weights_sha256"]) != (want["encoder"], want["weights_sha256"]):
        raise ClearctError(f"features come from {encoder['encoder']} ({encoder['weights_sha256'][:12]}) but the "
                           f"models were trained on {want['encoder']} ({want['weights_sha256'][:12]})", where)
    have_size, want_size = encoder.get("image_size"), want.get("image_size")
    if have_size is not None and want_size is not None and int(have_size) != int(want_size):
        raise ClearctError(f"features were embedded at {have_size} px but the models were trained on features at "
                           f"{want_size} px", where)

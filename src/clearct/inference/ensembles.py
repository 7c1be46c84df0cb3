"""A trained output folder → its fold ensemble, whichever model family made it (``kind`` in ``model.json``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from clearct.common.errors import ClearctError
from clearct.finetune3d.store import VolumeEnsemble, load_volume_ensemble
from clearct.mil.store import MilEnsemble, load_mil_ensemble
from clearct.modeling.store import model_kind

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

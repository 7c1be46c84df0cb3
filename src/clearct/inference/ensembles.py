"""A trained output folder → its fold ensemble, whichever model family made it (``kind`` in ``model.json``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch import nn

from clearct.common.errors import ClearctError
from clearct.encoders import RANDOM_INIT, create_encoder
from clearct.encoders.embed import prepare_encoder
from clearct.encoders.random_init import check_baseline_weights
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


def _run_config(folder: Path, command: str) -> dict:
    """The ``command`` section of a run folder's config.yaml (every command writes one); {} when absent."""
    config = Path(folder) / "config.yaml"
    if not config.is_file():
        return {}
    try:
        return (yaml.safe_load(config.read_text()) or {}).get(command) or {}
    except yaml.YAMLError as exc:
        raise ClearctError(f"invalid YAML ({exc})", config) from exc


def training_features(model_folder: Path) -> Path | None:
    """The features folder a crossval folder's models were trained on, as its config.yaml records it."""
    features = _run_config(model_folder, "crossval").get("features")
    return Path(features) if features else None


def recorded_encoder(ensemble: Ensemble, features: Path | None) -> tuple[str, Path | None] | None:
    """The encoder (name or run folder, weights) that made the models' features, where it is known: a
    random-init registry encoder is rebuilt by name; otherwise the ``extract`` run that wrote ``features``
    (its config.yaml) names it. None when neither tells, or the run folder it names is gone."""
    record = ensemble.encoder
    if record.get("weights_sha256") == RANDOM_INIT:
        return f"random:{record['encoder']}", None
    extract = _run_config(features, "extract") if features is not None else {}
    if not extract.get("encoder"):
        return None
    name, weights = str(extract["encoder"]), extract.get("weights")
    if ("/" in name or "\\" in name) and not Path(name).is_dir():
        return None
    return name, Path(weights) if weights else None


def model_encoder(ensemble: Ensemble, *, encoder: str | None, weights: Path | None, features: Path | None,
                  where: Path, random_init: bool = False) -> nn.Module:
    """The models' own encoder, ready for frozen forwards on the ensemble's device: ``encoder``/``weights`` when
    given, else the recorded one (:func:`recorded_encoder` over ``features``); refused unless it is the encoder
    the models were trained on (name, weights, image size)."""
    record = ensemble.encoder
    if encoder is None:
        found = recorded_encoder(ensemble, features)
        if found is None:
            raise ClearctError(f"the models were trained on features of {record['encoder']} (weights "
                               f"{record['weights_sha256'][:12]}…) and no extract run records where that encoder "
                               "is; pass --encoder (a run folder, or a registry name with --weights)", where)
        encoder, weights = found
    check_baseline_weights(encoder, weights, random_init)
    module = create_encoder(encoder, weights=weights, image_size=record.get("image_size"), allow_resize=True)
    check_encoder(ensemble, {"encoder": module.encoder_name, "weights_sha256": module.weights_sha256,
                             "image_size": module.input_size}, where)
    return prepare_encoder(module.to(ensemble.device).eval())

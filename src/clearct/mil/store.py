"""Saved models and fold ensembles.

Each trained model is ``DIR/model.safetensors`` (weights) + ``DIR/model.json`` (model kind and settings, task with
label names, F1 thresholds, training and validation patient ids, the feature encoder from the h5 attrs, the
HU windows, clearct version). A crossval folder holds one such DIR per job; its models form the ensemble that
deploy, attention and predict use (mean of the scores, mean of the thresholds, mean of the attention).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from clearct import __version__
from clearct.common.atomic import atomic_path, atomic_write_text
from clearct.common.errors import ClearctError
from clearct.mil.data import Bag
from clearct.mil.tasks import TaskSpec
from clearct.mil.train import TrainSettings, new_model, predict_scores


def save_model(folder: Path, model: torch.nn.Module, meta: dict) -> None:
    """Weights first, JSON last: a folder with model.json is complete (resume relies on that)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors", suffix=".safetensors.tmp") as tmp:
        save_file(state, str(tmp))
    atomic_write_text(folder / "model.json", json.dumps({**meta, "clearct_version": __version__}, indent=1))


def load_saved(folder: Path, build: Callable[[dict], torch.nn.Module],
               device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """A saved model of any family: ``build(meta)`` makes the network, the weights are loaded strictly."""
    try:
        meta = json.loads((folder / "model.json").read_text())
        model = build(meta)
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ClearctError(f"cannot load model ({exc})", folder) from exc
    return model.to(device).eval(), meta


def _build_mil(meta: dict) -> torch.nn.Module:
    settings = TrainSettings(**{"standardize": False, **meta["settings"]})  # models saved before the scaler
    return new_model(TaskSpec.from_json(meta["task"]), meta["in_dim"], meta["n_windows"], settings)


def load_model(folder: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    return load_saved(folder, _build_mil, device)


def model_meta(*, job: str, settings: TrainSettings, spec: TaskSpec, in_dim: int, windows: list, encoder: dict,
               thresholds: list[float], train: list[str], val: list[str], seed: int, fingerprint: str,
               history: list) -> dict:
    return {"job": job, "settings": asdict(settings), "task": spec.to_json(), "in_dim": in_dim,
            "n_windows": max(len(windows), 1), "windows": windows, "encoder": encoder, "thresholds": thresholds,
            "train_patients": train, "val_patients": val, "seed": seed, "fingerprint": fingerprint,
            "history": history}


@dataclass
class Ensemble:
    """The fold models of a crossval folder."""

    models: list[torch.nn.Module]
    metas: list[dict]
    device: torch.device

    @property
    def kind(self) -> str:
        """``mil`` (slice features) or ``finetune3d`` (whole volumes)."""
        return self.metas[0].get("kind", "mil")

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec.from_json(self.metas[0]["task"])

    @property
    def windows(self) -> list:
        return self.metas[0]["windows"]

    @property
    def window_names(self) -> list[str]:
        """The HU windows the models were trained on, by name: deploy and attention read only these instances."""
        return [str(w[0]) for w in self.windows]

    @property
    def encoder(self) -> dict:
        return self.metas[0]["encoder"]

    @property
    def thresholds(self) -> np.ndarray:
        return np.mean([m["thresholds"] for m in self.metas], axis=0)

    @property
    def training_patients(self) -> set[str]:
        return {p for m in self.metas for p in m["train_patients"] + m["val_patients"]}

    def predict(self, bags: Sequence[Bag]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Mean score over the models and mean attention per bag.

        Regression scores are in label units and survival risks are averaged as log hazard ratios.
        """
        scores, attn = [], []
        for model, meta in zip(self.models, self.metas):
            s, a = predict_scores(model, TaskSpec.from_json(meta["task"]), bags, self.device,
                                  meta["settings"]["eval_instances"])
            scores.append(s)
            attn.append(a)
        return np.mean(scores, axis=0), [np.mean([a[i] for a in attn], axis=0) for i in range(len(bags))]


def load_ensemble(folder: Path, device: torch.device | str = "cpu") -> Ensemble:
    """All models under a crossval or finetune3d folder (``fold-*/model.json``), or a single model folder; a
    finetune3d folder gives a :class:`clearct.finetune3d.store.VolumeEnsemble`."""
    folder = Path(folder)
    dirs = [folder] if (folder / "model.json").is_file() else sorted(p.parent for p in folder.glob("fold-*/model.json"))
    if not dirs:
        raise ClearctError("no trained models (fold-*/model.json) found", folder)
    try:
        kind = json.loads((dirs[0] / "model.json").read_text()).get("kind", "mil")
    except (OSError, ValueError) as exc:
        raise ClearctError(f"cannot read model.json ({exc})", dirs[0]) from exc
    if kind == "finetune3d":
        from clearct.finetune3d.store import VolumeEnsemble, load_volume_model

        loaded = [load_volume_model(d, device) for d in dirs]
        return VolumeEnsemble([m for m, _ in loaded], [meta for _, meta in loaded], torch.device(device))
    loaded = [load_model(d, device) for d in dirs]
    return Ensemble([m for m, _ in loaded], [meta for _, meta in loaded], torch.device(device))


def require_mil(ensemble: Ensemble, command: str, folder: Path) -> None:
    """Slice attention and one-scan prediction from features need MIL models."""
    if ensemble.kind != "mil":
        raise ClearctError(f"holds {ensemble.kind} models, which have no slice attention; {command} needs a "
                           "crossval folder (use deploy --scans for finetune3d models)", folder)

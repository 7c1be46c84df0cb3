"""Saved models and fold ensembles, for every model family.

Each trained model is ``DIR/model.safetensors`` (weights) + ``DIR/model.json`` (family ``kind``, settings, task
with label names, F1 thresholds, training and validation patient ids, the inputs' encoder, the HU windows, clearct
version; a calibrated model's map in ``task``). A crossval or finetune3d folder holds one such DIR per job; its
models form the ensemble that deploy, attention and predict use (mean of the — calibrated — scores, mean of the
thresholds). Each family loads its own networks (:mod:`clearct.mil.store`, :mod:`clearct.finetune3d.store`);
:mod:`clearct.inference.ensembles` picks the family from ``model.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from clearct import __version__
from clearct.common.atomic import atomic_path, atomic_write_text
from clearct.common.errors import ClearctError
from clearct.modeling.tasks import TaskSpec, scores_from_outputs


def save_model(folder: Path, model: torch.nn.Module, meta: dict) -> None:
    """Weights first, JSON last: a folder with model.json is complete (resume relies on that)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / "model.safetensors", suffix=".safetensors.tmp") as tmp:
        save_file(state, str(tmp))
    save_meta(folder, {**meta, "clearct_version": __version__})


def save_meta(folder: Path, meta: dict) -> None:
    """``model.json`` alone (a reloaded model's new calibration); the ``reused`` mark of a reload is not saved."""
    atomic_write_text(folder / "model.json", json.dumps({k: v for k, v in meta.items() if k != "reused"}, indent=1))


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


def model_folders(folder: Path) -> list[Path]:
    """The model folders of a crossval or finetune3d output (``fold-*/model.json``), or ``folder`` itself when it
    is one model."""
    folder = Path(folder)
    dirs = [folder] if (folder / "model.json").is_file() else sorted(p.parent for p in folder.glob("fold-*/model.json"))
    if not dirs:
        raise ClearctError("no trained models (fold-*/model.json) found", folder)
    return dirs


def model_kind(folder: Path) -> str:
    """The family of a model folder's models: ``mil`` (slice features) or ``finetune3d`` (whole volumes)."""
    first = model_folders(folder)[0]
    try:
        return json.loads((first / "model.json").read_text()).get("kind", "mil")
    except (OSError, ValueError) as exc:
        raise ClearctError(f"cannot read model.json ({exc})", first) from exc


Attention = TypeVar("Attention")  # what a family's ensemble gives per item besides scores (MIL: attention)


@dataclass
class Ensemble(Generic[Attention]):
    """The fold models of one output folder and what they share; each family adds its ``outputs``."""

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

    @property
    def calibrated(self) -> bool:
        """Whether the models carry calibration maps (``--calibrate`` other than none)."""
        return any(TaskSpec.from_json(m["task"]).calibration for m in self.metas)

    def outputs(self, items: Sequence[Any]) -> tuple[list[torch.Tensor], Attention]:
        """Every model's raw outputs of ``items`` and the mean attention per item (None without attention)."""
        raise NotImplementedError

    def scores(self, outputs: Sequence[torch.Tensor], *, calibrated: bool = True) -> np.ndarray:
        """The mean over the models of their scores of their ``outputs``, each through its own calibration map,
        or, with ``calibrated=False``, without it. Regression scores are in label units and survival risks are
        averaged as log hazard ratios."""
        specs = [TaskSpec.from_json(m["task"]) for m in self.metas]
        return np.mean([scores_from_outputs(spec if calibrated else spec.uncalibrated(), out).numpy()
                        for spec, out in zip(specs, outputs)], axis=0)

    def predict(self, items: Sequence[Any]) -> tuple[np.ndarray, Attention]:
        """Mean (calibrated) score over the models and mean attention per item (None without attention)."""
        outputs, attention = self.outputs(items)
        return self.scores(outputs), attention


def load_folder(folder: Path, load: Callable[[Path, torch.device | str], tuple[torch.nn.Module, dict]],
                device: torch.device | str) -> tuple[list[torch.nn.Module], list[dict]]:
    """Every model of ``folder`` loaded with the family's ``load``: (networks, metas)."""
    loaded = [load(d, device) for d in model_folders(folder)]
    return [m for m, _ in loaded], [meta for _, meta in loaded]

"""finetune3d fold models: ``fold-*/model.safetensors`` + ``model.json`` as for MIL (:mod:`clearct.modeling.store`),
with the 3D network's arch and width and the volume preparation (:class:`~clearct.finetune3d.volumes.VolumePrep`),
so deploy prepares new scans exactly like the training scans."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clearct.config import VolumeTraining
from clearct.finetune3d.train import VolumeItem, new_net, predict_volumes
from clearct.finetune3d.volumes import VolumePrep
from clearct.modeling.store import Ensemble, load_folder, load_saved
from clearct.modeling.tasks import TaskSpec


def _build(meta: dict) -> torch.nn.Module:
    return new_net(TaskSpec.from_json(meta["task"]), VolumePrep.from_json(meta["prep"]),
                   VolumeTraining(**meta["settings"]))


def load_volume_model(folder: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    return load_saved(folder, _build, device)


class VolumeEnsemble(Ensemble):
    """The fold models of a finetune3d folder: mean of their scores and of their thresholds."""

    @property
    def prep(self) -> VolumePrep:
        return VolumePrep.from_json(self.metas[0]["prep"])

    def predict(self, items: Sequence[VolumeItem]) -> tuple[np.ndarray, None]:
        scores = [predict_volumes(m, TaskSpec.from_json(meta["task"]), items, self.prep, self.device,
                                  meta["settings"]["batch_size"]) for m, meta in zip(self.models, self.metas)]
        return np.mean(scores, axis=0), None


def load_volume_ensemble(folder: Path, device: torch.device | str = "cpu") -> VolumeEnsemble:
    return VolumeEnsemble(*load_folder(folder, load_volume_model, device), torch.device(device))

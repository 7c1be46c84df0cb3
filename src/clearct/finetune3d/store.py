"""finetune3d fold models: ``fold-*/model.safetensors`` + ``model.json`` as for MIL (:mod:`clearct.modeling.store`),
with the 3D network's arch and width and the volume preparation (:class:`~clearct.finetune3d.volumes.VolumePrep`),
so deploy prepares new scans exactly like the training scans."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from clearct.config import VolumeTraining
from clearct.finetune3d.train import VolumeItem, infer, new_net
from clearct.finetune3d.volumes import VolumePrep
from clearct.modeling.store import Ensemble, load_folder, load_saved
from clearct.modeling.tasks import TaskSpec


def _build(meta: dict) -> torch.nn.Module:
    return new_net(TaskSpec.from_json(meta["task"]), VolumePrep.from_json(meta["prep"]),
                   VolumeTraining(**meta["settings"]))


def load_volume_model(folder: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    return load_saved(folder, _build, device)


class VolumeEnsemble(Ensemble[None]):
    """The fold models of a finetune3d folder: mean of their (calibrated) scores and of their thresholds."""

    @property
    def prep(self) -> VolumePrep:
        return VolumePrep.from_json(self.metas[0]["prep"])

    def outputs(self, items: Sequence[VolumeItem]) -> tuple[list[torch.Tensor], None]:
        """Every model's raw outputs (3D networks have no attention)."""
        return [infer(m, items, self.prep, self.device, meta["settings"]["batch_size"])
                for m, meta in zip(self.models, self.metas)], None


def load_volume_ensemble(folder: Path, device: torch.device | str = "cpu") -> VolumeEnsemble:
    return VolumeEnsemble(*load_folder(folder, load_volume_model, device), torch.device(device))

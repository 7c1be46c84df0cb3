"""MIL models on disk (:mod:`clearct.modeling.store` format) and the MIL fold ensemble: mean (calibrated) score and
mean attention over the fold models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clearct.config import MilTraining
from clearct.mil.data import Bag
from clearct.mil.train import infer, new_model
from clearct.modeling.store import Ensemble, load_folder, load_saved
from clearct.modeling.tasks import TaskSpec


def _build(meta: dict) -> torch.nn.Module:
    return new_model(TaskSpec.from_json(meta["task"]), meta["in_dim"], meta["n_windows"],
                     MilTraining(**meta["settings"]))


def load_model(folder: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    return load_saved(folder, _build, device)


def model_meta(*, job: str, settings: MilTraining, spec: TaskSpec, in_dim: int, windows: list, encoder: dict,
               thresholds: list[float], train: list[str], val: list[str], seed: int, fingerprint: str,
               history: list) -> dict:
    return {"job": job, "settings": settings.model_dump(), "task": spec.to_json(), "in_dim": in_dim,
            "n_windows": max(len(windows), 1), "windows": windows, "encoder": encoder, "thresholds": thresholds,
            "train_patients": train, "val_patients": val, "seed": seed, "fingerprint": fingerprint,
            "history": history}


class MilEnsemble(Ensemble[list[np.ndarray]]):
    """The fold models of a crossval folder."""

    def outputs(self, bags: Sequence[Bag]) -> tuple[list[torch.Tensor], list[np.ndarray]]:
        """Every model's raw outputs and the mean attention per bag."""
        outs, attn = [], []
        for model, meta in zip(self.models, self.metas):
            o, a = infer(model, bags, self.device, meta["settings"]["eval_instances"])
            outs.append(o)
            attn.append(a)
        return outs, [np.mean([a[i] for a in attn], axis=0) for i in range(len(bags))]


def load_mil_ensemble(folder: Path, device: torch.device | str = "cpu") -> MilEnsemble:
    return MilEnsemble(*load_folder(folder, load_model, device), torch.device(device))

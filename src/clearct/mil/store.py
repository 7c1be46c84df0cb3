"""MIL models on disk (:mod:`clearct.modeling.store` format) and the MIL fold ensemble: mean score and mean
attention over the fold models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clearct.config import MilTraining
from clearct.mil.data import Bag
from clearct.mil.train import new_model, predict_scores
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


class MilEnsemble(Ensemble):
    """The fold models of a crossval folder."""

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


def load_mil_ensemble(folder: Path, device: torch.device | str = "cpu") -> MilEnsemble:
    return MilEnsemble(*load_folder(folder, load_model, device), torch.device(device))

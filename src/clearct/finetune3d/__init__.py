"""The end-to-end 3D baseline: a 3D CNN from MONAI or torchvision trained on whole volumes per task, with the
folds, early stopping and outputs of ``crossval``. The command entry point is imported lazily."""

from __future__ import annotations

import importlib

_LAZY = {"run_finetune3d": "clearct.finetune3d.run"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)

"""Attention-based MIL on frozen slice embeddings: models, training, cross-validation, deployment, prediction.

The command entry points are imported lazily so that ``import clearct.mil`` stays cheap.
"""

from __future__ import annotations

import importlib

_LAZY = {"run_crossval": "clearct.mil.crossval", "run_deploy": "clearct.mil.deploy",
         "run_predict": "clearct.mil.predict", "run_attention": "clearct.mil.attention"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)

"""``clearct encoders``: every name ``--encoder`` and ``--arch`` accept, from the registry itself.

Each registry entry with the first line of its builder's docstring; the forms that are not entries (``timm:<name>``
is a family entry, ``random:<name>`` any entry at explicit random init, a pretraining run folder); and the
foundation baselines with where their released weights are published and which file ``--weights`` takes.
"""

from __future__ import annotations

import inspect

from clearct.config import EncodersConfig
from clearct.encoders import RANDOM_PREFIX
from clearct.encoders.baselines import RELEASED_WEIGHTS
from clearct.encoders.registry import registry_entries

FORMS = [
    (f"{RANDOM_PREFIX}<name>", "any entry above at random initialisation, on purpose (controls; no --weights)"),
    ("RUN_FOLDER", "a clearct pretrain run folder (encoder.json + encoder.safetensors: its own weights and size)"),
]


def encoder_lines() -> list[str]:
    """The listing ``clearct encoders`` prints."""
    rows = []
    for entry in registry_entries():
        name = f"{entry.name}:<name>" if entry.family else entry.name
        doc = (inspect.getdoc(entry.build) or "").split("\n")[0].replace("``", "")
        if entry.name in RELEASED_WEIGHTS:
            doc += " — a foundation baseline: needs --weights"
        rows.append((name, doc))
    rows += FORMS
    width = max(len(n) for n, _ in rows) + 2
    lines = ["Encoders (--encoder of extract/predict/attention, --arch of pretrain):"]
    lines += [f"  {n:<{width}}{d}" for n, d in rows]
    lines += ["", "Released weights of the foundation baselines (published there when this was written; check the "
              "page), passed as --weights FILE:"]
    lines += [f"  {n:<{width}}{w}" for n, w in RELEASED_WEIGHTS.items()]
    lines += ["", "Weights of the other entries: a run folder of clearct pretrain, or --weights FILE (a .safetensors "
              "or torch state dict of that architecture); without them, random initialisation (announced)."]
    return lines


def run_encoders(cfg: EncodersConfig) -> int:
    print("\n".join(encoder_lines()))
    return 0

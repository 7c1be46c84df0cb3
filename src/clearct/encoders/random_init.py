"""Random-initialised encoders never pass silently: baselines need weights, and random features are announced.

A foundation baseline (BiomedCLIP, SAM2, Merlin, CT-CLIP) at random init gives features that look like real ones,
so the commands refuse it unless ``--weights`` or an explicit ``--random-init`` is given. Every command that
embeds with an encoder whose ``weights_sha256`` is ``random-init`` prints a warning on the terminal and records it
in its summary; the MIL commands do the same for the feature files they read (``clearct.mil.data``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from clearct.common.errors import ClearctError
from clearct.encoders.baselines import BASELINES
from clearct.encoders.registry import RANDOM_INIT

LOG = logging.getLogger("clearct")


def check_baseline_weights(encoder: str, weights: str | Path | None, random_init: bool) -> None:
    """ClearctError when ``encoder`` names a foundation baseline and neither weights nor ``random_init`` are given."""
    if encoder in BASELINES and weights is None and not random_init:
        raise ClearctError(
            f"--encoder {encoder} is a pretrained baseline but no --weights were given: pass the released weights "
            "file (docs/encoders.md), or --random-init for random features (a control or a test, not the baseline)"
        )
    if random_init and weights is not None:
        raise ClearctError("--random-init and --weights contradict each other; give one of them")


def random_features_note(name: str) -> str:
    return (f"features of {name} come from a randomly initialised encoder (no weights): a random-feature "
            "baseline, not a pretrained model")


def random_init_warning(encoder: object, command: str) -> str | None:
    """Print and log the warning for an encoder without weights; returns its text (None when it has weights)."""
    if getattr(encoder, "weights_sha256", None) != RANDOM_INIT:
        return None
    text = random_features_note(str(getattr(encoder, "encoder_name", "the encoder")))
    LOG.warning(text)
    print(f"clearct {command}: warning: {text}", file=sys.stderr)
    return text

"""``--calibrate none|temperature|platt``: a fold model's calibration map, fitted on the model's own validation part
(the patients that chose its epoch and choose its F1 thresholds), never on its test patients.

The map is stored in the job's :class:`~clearct.modeling.tasks.TaskSpec` (``model.json`` → ``task`` →
``calibration``), so every prediction of the model — crossval's test and held-out scans, deploy, predict, attention
— goes through it and the ensemble averages calibrated probabilities. The fits are in
:mod:`clearct.evaluate.calibration`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from clearct.common.errors import ClearctError
from clearct.evaluate.calibration import fit_platt, fit_softmax_temperature, fit_temperature
from clearct.modeling.tasks import TaskSpec, calibration_logits, eval_labels

LOG = logging.getLogger("clearct")


def check_calibration(method: str, spec: TaskSpec) -> None:
    """Refuse a calibration of a task that has no probabilities, before anything is trained."""
    if method != "none" and not spec.is_classification:
        raise ClearctError(f"--calibrate {method}: a {spec.kind} task has no probabilities to calibrate "
                           "(calibration is for multilabel, binary and multiclass tasks)")


def fit_calibration(spec: TaskSpec, out_val: torch.Tensor, y_val: np.ndarray, method: str,
                    name: str) -> dict | None:
    """The ``method`` map of the outputs of ``spec`` (without a map) fitted on raw validation outputs (n, n_out)
    and parsed labels (n, k); None for ``none``. An output whose validation part lacks positives or negatives keeps
    the identity (T = 1, or slope 1 and intercept 0), with a warning; so does a Platt fit with a slope ≤ 0 (the
    validation part ranks the wrong way round; calibration must not reverse a model's ranking)."""
    if method == "none":
        return None
    if method not in ("temperature", "platt"):
        raise ValueError(f"unknown calibration method {method!r}")
    y = eval_labels(spec, y_val) if len(y_val) else np.zeros((0, len(spec.output_names)))
    if spec.kind == "multiclass" and method == "temperature":
        present = int((y.sum(0) > 0).sum())
        if present < 2:
            LOG.warning("%s: %d class(es) in the validation part; temperature 1 (no calibration)", name, present)
            return {"method": "temperature", "temperature": [1.0]}
        return {"method": "temperature",
                "temperature": [fit_softmax_temperature(out_val.double().numpy(), y.argmax(1))]}
    z = calibration_logits(spec, out_val).numpy()
    temperature, slope, intercept = [], [], []
    for j, output in enumerate(spec.output_names):
        usable = 0 < y[:, j].sum() < len(y)
        if not usable:
            LOG.warning("%s: no positive or no negative %s in the validation part; %s left uncalibrated", name,
                        output, output)
        if method == "temperature":
            temperature.append(fit_temperature(z[:, j], y[:, j]) if usable else 1.0)
            continue
        a, b = fit_platt(z[:, j], y[:, j]) if usable else (1.0, 0.0)
        if a <= 0:
            LOG.warning("%s: the validation part ranks %s the wrong way round (Platt slope %.3g); %s left "
                        "uncalibrated", name, output, a, output)
            a, b = 1.0, 0.0
        slope.append(a)
        intercept.append(b)
    if method == "temperature":
        return {"method": "temperature", "temperature": temperature}
    return {"method": "platt", "slope": slope, "intercept": intercept}

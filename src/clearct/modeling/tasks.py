"""Tasks: how label strings become targets, how many outputs a model has, which loss trains it and how its raw
outputs become the scores that are evaluated.

=========== ============================ ========= =============================== ===========================
task        labels.csv columns           outputs   loss                            score per output
=========== ============================ ========= =============================== ===========================
multilabel  one 0/1 column per target    T         BCE, pos_weight = neg/pos       sigmoid probability
binary      one column, two values       1         CE with class weights (2 logits) P(second class)
multiclass  one column, K values         K         CE with class weights           softmax probability
regression  one numeric column per target T        L1 (or MSE) on z-scored targets value in label units
survival    time, event (1/0) columns    1         Cox partial likelihood          risk (log hazard ratio)
=========== ============================ ========= =============================== ===========================

A classification model may carry a calibration map fitted on its validation part (``--calibrate``,
:mod:`clearct.modeling.calibrate`); its scores are then the calibrated probabilities (:func:`calibrated_scores`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from clearct.modeling import losses

TASKS = ("multilabel", "binary", "multiclass", "regression", "survival")
_TRUE = {"1", "1.0", "true", "yes", "y", "pos", "positive"}
_FALSE = {"0", "0.0", "false", "no", "n", "neg", "negative"}


@dataclass
class TaskSpec:
    """A task with its label vocabulary; stored in every model's JSON so deploy parses labels the same way."""

    kind: str
    targets: list[str]
    classes: list[str] = field(default_factory=list)  # binary / multiclass: class names in output order
    y_mean: list[float] = field(default_factory=list)  # regression: standardisation of the training labels
    y_std: list[float] = field(default_factory=list)
    # a fitted calibration map: {"method": "temperature", "temperature": [T per output; one for multiclass]} or
    # {"method": "platt", "slope": [...], "intercept": [...]}; None: the scores are the model's own
    calibration: dict | None = None

    @property
    def n_out(self) -> int:
        return {"multilabel": len(self.targets), "binary": 2, "multiclass": len(self.classes),
                "regression": len(self.targets), "survival": 1}[self.kind]

    @property
    def output_names(self) -> list[str]:
        """Names of the evaluated score columns."""
        if self.kind == "multiclass":
            return list(self.classes)
        if self.kind == "survival":
            return ["risk"]
        return list(self.targets)

    @property
    def is_classification(self) -> bool:
        return self.kind in ("multilabel", "binary", "multiclass")

    @property
    def calibration_method(self) -> str:
        return self.calibration["method"] if self.calibration else "none"

    def uncalibrated(self) -> TaskSpec:
        """The same task without its calibration map (the model's own scores)."""
        return replace(self, calibration=None)

    def to_json(self) -> dict:
        # without a map the key is left out, so the fingerprints of models saved before calibration existed hold
        return {"kind": self.kind, "targets": self.targets, "classes": self.classes,
                "y_mean": self.y_mean, "y_std": self.y_std, **({"calibration": self.calibration}
                                                              if self.calibration else {})}

    @classmethod
    def from_json(cls, d: dict) -> TaskSpec:
        return cls(**d)


# one column of whole numbers with at least this many distinct values is a quantity (regression), not classes
MIN_INTEGER_LEVELS = 20


def _present(values: list[str]) -> list[str]:
    return [v for v in values if v and v.lower() not in ("na", "nan")]


def _number(value: str) -> float | None:
    try:
        x = float(value)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def _shown(values: list[str], limit: int = 6) -> str:
    return ", ".join(values[:limit]) + (f" … ({len(values)} in all)" if len(values) > limit else "")


def infer_task(targets: list[str], columns: dict[str, list[str]]) -> tuple[str, str]:
    """The task the label values of ``targets`` imply and the reason, in words; ValueError (saying to pass
    --task) when they do not tell: one column with two values → binary; one column of more than two categories
    → multiclass; numbers with fractions, or whole numbers with ≥ :data:`MIN_INTEGER_LEVELS` levels →
    regression; several 0/1 columns → multilabel; several numeric columns, none of them 0/1 → regression.
    Survival is never inferred (time,event look like two numeric columns)."""
    kinds: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for t in targets:
        values = sorted(set(_present(columns[t])), key=_class_key)
        numbers = [_number(v) for v in values]
        numeric = all(x is not None for x in numbers)
        if len(values) < 2:
            raise ValueError(f"column {t} holds {len(values)} distinct value(s) ({_shown(values)}): nothing to "
                             "predict")
        if len(values) == 2 and all(v.lower() in _TRUE | _FALSE for v in values):
            kinds[t], reasons[t] = "0/1", f"column {t} has two values {values[0]}, {values[1]}"
        elif not numeric:
            what = "two values" if len(values) == 2 else f"{len(values)} categories"
            kinds[t], reasons[t] = "categories", f"column {t} has {what} ({_shown(values)})"
        elif any(x != round(x) for x in numbers if x is not None) or len(values) >= MIN_INTEGER_LEVELS:
            kinds[t], reasons[t] = "numbers", f"column {t} holds numbers ({_shown(values)})"
        else:
            kinds[t], reasons[t] = "levels", f"column {t} holds {len(values)} whole numbers ({_shown(values)})"
    why = "; ".join(reasons.values())
    if len(targets) == 1:
        (t,) = targets
        two = sorted(set(_present(columns[t])), key=_class_key)
        if len(two) == 2:
            return "binary", f"column {t} has two values {', '.join(two)}"
        if kinds[t] == "categories":
            return "multiclass", why
        if kinds[t] == "numbers":
            return "regression", why
        raise ValueError(f"cannot infer the task: {why}: classes or a quantity? pass --task multiclass or "
                         "--task regression")
    found = set(kinds.values())
    if found == {"0/1"}:
        return "multilabel", f"{len(targets)} columns of 0/1 values"
    if found <= {"numbers", "levels"}:
        return "regression", f"{len(targets)} numeric columns ({why})"
    survival = len(targets) == 2 and kinds[targets[1]] == "0/1" and kinds[targets[0]] in ("numbers", "levels")
    hint = " (time,event? pass --task survival)" if survival else ""
    raise ValueError(f"cannot infer the task from {', '.join(targets)}: {why}{hint}; pass --task")


def make_task(kind: str, targets: list[str], columns: dict[str, list[str]]) -> TaskSpec:
    """Check the target columns against the task and fix the class vocabulary from the labels."""
    if kind not in TASKS:
        raise ValueError(f"unknown task {kind!r}")
    if kind in ("binary", "multiclass") and len(targets) != 1:
        raise ValueError(f"task {kind} takes one target column, got {len(targets)}")
    if kind == "survival" and len(targets) != 2:
        raise ValueError("task survival takes two target columns: time,event")
    spec = TaskSpec(kind, list(targets))
    if kind in ("binary", "multiclass"):
        values = sorted({v for v in columns[targets[0]] if v and v.lower() not in ("na", "nan")}, key=_class_key)
        if kind == "binary" and len(values) != 2:
            raise ValueError(f"binary target {targets[0]!r} needs exactly two values, found {values[:6]}")
        spec.classes = values
    return spec


def _class_key(v: str) -> tuple:
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def parse_label(spec: TaskSpec, values: list[str]) -> np.ndarray:
    """Label strings of one row (in ``spec.targets`` order) → float32 vector; raises ValueError naming the
    offending value (unknown class, non-0/1 multi-label value, non-numeric, negative time …)."""
    if spec.kind == "multilabel":
        out = []
        for t, v in zip(spec.targets, values):
            low = v.lower()
            if low not in _TRUE | _FALSE:
                raise ValueError(f"{t}={v!r} is not 0/1")
            out.append(1.0 if low in _TRUE else 0.0)
        return np.asarray(out, np.float32)
    if spec.kind in ("binary", "multiclass"):
        if values[0] not in spec.classes:
            raise ValueError(f"{spec.targets[0]}={values[0]!r} is not one of {', '.join(spec.classes)}")
        return np.asarray([spec.classes.index(values[0])], np.float32)
    nums = []
    for i, (t, v) in enumerate(zip(spec.targets, values)):
        if spec.kind == "survival" and i == 1 and v.lower() in _TRUE | _FALSE:
            nums.append(1.0 if v.lower() in _TRUE else 0.0)  # event written as true/false, yes/no …
            continue
        try:
            x = float(v)
        except ValueError:
            raise ValueError(f"{t}={v!r} is not a number") from None
        if not math.isfinite(x):
            raise ValueError(f"{t}={v!r} is not a finite number")
        nums.append(x)
    if spec.kind == "survival" and (nums[0] < 0 or nums[1] not in (0.0, 1.0)):
        raise ValueError(f"survival needs time ≥ 0 and event 0/1, got {values}")
    return np.asarray(nums, np.float32)


def eval_labels(spec: TaskSpec, y: np.ndarray) -> np.ndarray:
    """Parsed labels (n, k) → the matrix evaluated against the scores (one column per output name)."""
    if spec.kind == "binary":
        return y[:, :1]
    if spec.kind == "multiclass":
        return np.eye(len(spec.classes), dtype=np.float32)[y[:, 0].astype(int)]
    return y


def fit_normalisation(spec: TaskSpec, y_train: np.ndarray) -> None:
    """Regression: remember mean and sd of the training labels (the model learns z-scores)."""
    if spec.kind == "regression":
        spec.y_mean = [float(m) for m in y_train.mean(0)]
        spec.y_std = [float(s) if s > 0 else 1.0 for s in y_train.std(0)]


@dataclass
class LossFn:
    """The training loss of a task with its weights fitted on the training labels."""

    spec: TaskSpec
    weight: torch.Tensor | None = None
    regression: str = "l1"

    def __call__(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k = self.spec.kind
        weight = None if self.weight is None else self.weight.to(out.device)
        if k == "multilabel":
            return losses.weighted_bce(out, y, weight)
        if k in ("binary", "multiclass"):
            return losses.weighted_ce(out, y[:, 0], weight)
        if k == "survival":
            return losses.cox_partial_likelihood(out[:, 0], y[:, 0], y[:, 1])
        mean = torch.tensor(self.spec.y_mean, device=out.device)
        std = torch.tensor(self.spec.y_std, device=out.device)
        return losses.regression_loss(out, (y - mean) / std, self.regression)


def make_loss(spec: TaskSpec, y_train: np.ndarray, regression: str = "l1") -> LossFn:
    """Positive-class weights (multi-label) or inverse-frequency class weights (CE), from the training labels."""
    weight = None
    if spec.kind == "multilabel":
        pos = y_train.sum(0)
        weight = torch.tensor((len(y_train) - pos) / np.maximum(pos, 1.0), dtype=torch.float32)
    elif spec.kind in ("binary", "multiclass"):
        counts = np.bincount(y_train[:, 0].astype(int), minlength=spec.n_out).astype(np.float64)
        w = len(y_train) / (spec.n_out * np.maximum(counts, 1.0))
        weight = torch.tensor(w, dtype=torch.float32)
    return LossFn(spec, weight, regression)


def scores_from_outputs(spec: TaskSpec, out: torch.Tensor) -> torch.Tensor:
    """Raw model outputs (B, n_out) → evaluated scores (B, len(output_names)); calibrated when the spec has a map."""
    if spec.calibration:
        return calibrated_scores(spec, out)
    k = spec.kind
    if k == "multilabel":
        return torch.sigmoid(out)
    if k == "binary":
        return torch.softmax(out, dim=1)[:, 1:]
    if k == "multiclass":
        return torch.softmax(out, dim=1)
    if k == "regression":
        return out * torch.tensor(spec.y_std, device=out.device) + torch.tensor(spec.y_mean, device=out.device)
    return out


def calibration_logits(spec: TaskSpec, out: torch.Tensor) -> torch.Tensor:
    """The logit of every evaluated probability (B, len(output_names)), in float64, that calibration maps act on:
    multilabel the outputs, binary the log-odds of the second class z₁ − z₀, multiclass the one-vs-rest log-odds
    log p_k − log(1 − p_k) = z_k − logsumexp_{j≠k} z_j."""
    z = out.double()
    if spec.kind == "multilabel":
        return z
    if spec.kind == "binary":
        return z[:, 1:] - z[:, :1]
    if spec.kind == "multiclass":
        others = z[:, None, :].expand(-1, z.shape[1], -1).masked_fill(torch.eye(z.shape[1], dtype=torch.bool,
                                                                       device=z.device), float("-inf"))
        return z - torch.logsumexp(others, dim=2)
    raise ValueError(f"a {spec.kind} task has no probabilities to calibrate")


def calibrated_scores(spec: TaskSpec, out: torch.Tensor) -> torch.Tensor:
    """Scores through the spec's calibration map, in float64 (no float32 ties near 0 and 1).

    Temperature: sigmoid(logit / T) per output; multiclass softmax(z / T) with one T (argmax kept). Platt:
    sigmoid(a · logit + b) per output; multiclass per class on the one-vs-rest logit, then normalised to sum 1 (as
    scikit-learn's CalibratedClassifierCV). Per output both are increasing, so binary and multilabel rankings are
    unchanged; multiclass per-class rankings can move through the shared normalisation.
    """
    cal = spec.calibration or {}
    if cal.get("method") == "temperature":
        temperature = torch.tensor(cal["temperature"], dtype=torch.float64)
        if spec.kind == "multiclass":
            return torch.softmax(out.double() / temperature[0], dim=1)
        return torch.sigmoid(calibration_logits(spec, out) / temperature)
    if cal.get("method") == "platt":
        slope = torch.tensor(cal["slope"], dtype=torch.float64)
        intercept = torch.tensor(cal["intercept"], dtype=torch.float64)
        q = torch.sigmoid(slope * calibration_logits(spec, out) + intercept)
        return q / q.sum(dim=1, keepdim=True) if spec.kind == "multiclass" else q
    raise ValueError(f"unknown calibration map {cal!r}")

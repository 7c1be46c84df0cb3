"""One training loop for every task and model kind, and whole-bag inference.

Defaults follow the paper (AdamW, lr 1e-4, 32 epochs, batch 128 bags, early stopping with patience 8 on an inner
validation split) with one guard for small cohorts: **a floor on optimizer steps**. The batch is shrunk to
``max(1, n_train · epochs // min_steps)`` bags when the configured batch would give fewer than ``min_steps``
updates in total (128 training bags × 32 epochs at batch 128 is 32 steps, too few for lr 1e-4 to learn anything;
with the default ``min_steps=2000`` the same cohort trains with batch 2, i.e. 2048 steps). The compute per epoch
is unchanged — only the number of updates grows. Training bags are random subsets of at most ``bag_size``
instances drawn uniformly (never steered by lesion annotations), optionally with ``instance_dropout``: a share of
each training bag's instances masked out at random per step (the bag keeps its padded length, the masked instances
get zero attention); evaluation always uses whole bags.
A second addition: features are z-scored per dimension with the training bags' statistics (``standardize``, on by
default; :class:`~clearct.mil.models.FeatureScaler`). Without it, on frozen ViT class-token features whose
per-dimension means exceed the spread between slices, ABMIL fails even on a planted per-slice signal of 9 sd
(measured in docs/mil.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from clearct.common.compute import count_flops, step_flops
from clearct.common.device import autocast_for, training_threads
from clearct.common.training import adamw, run_epochs
from clearct.config import MilTraining
from clearct.mil.data import Bag
from clearct.mil.models import FeatureScaler, build_model
from clearct.modeling.tasks import LossFn, TaskSpec

LOG = logging.getLogger("clearct")


def effective_batch_size(n_train: int, s: MilTraining) -> int:
    """The batch size after the floor on optimizer steps (see the module docstring)."""
    return max(1, min(s.batch_size, (n_train * s.epochs) // max(s.min_steps, 1)))


def collate(bags: Sequence[Bag], rows: Sequence[np.ndarray | None] | None = None,
            device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad bags (or the chosen ``rows`` of each) into x (B, N, D) float32, mask (B, N), window (B, N), y (B, k)."""
    rows = rows or [None] * len(bags)
    parts = [(b.feats, b.window) if r is None else (b.feats[r], b.window[r]) for b, r in zip(bags, rows)]
    n_max = max(len(w) for _, w in parts)
    dim = bags[0].feats.shape[1]
    x = np.zeros((len(bags), n_max, dim), np.float32)
    window = np.zeros((len(bags), n_max), np.int64)
    mask = np.zeros((len(bags), n_max), bool)
    for i, (f, w) in enumerate(parts):
        x[i, : len(w)] = f
        window[i, : len(w)] = w
        mask[i, : len(w)] = True
    y = np.stack([b.y for b in bags]).astype(np.float32)
    return (torch.from_numpy(x).to(device), torch.from_numpy(mask).to(device), torch.from_numpy(window).to(device),
            torch.from_numpy(y).to(device))


def drop_instances(mask: torch.Tensor, share: float, rng: np.random.Generator) -> torch.Tensor:
    """Instance dropout: each real instance of ``mask`` (B, N) is masked out with probability ``share``; a bag that
    would lose every instance keeps one of them, drawn at random. Padding stays masked; the shape is unchanged."""
    real = mask.cpu().numpy()
    keep = real & (rng.random(real.shape) >= share)
    for i in np.flatnonzero(real.any(axis=1) & ~keep.any(axis=1)):
        keep[i, rng.choice(np.flatnonzero(real[i]))] = True
    return torch.from_numpy(keep).to(mask.device)


def training_batch(bags: Sequence[Bag], s: MilTraining, rng: np.random.Generator,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One training batch: at most ``bag_size`` instances per bag drawn uniformly, then instance dropout (no random
    draw at all when ``instance_dropout`` is 0, so such runs repeat those without the option bitwise)."""
    rows = [np.sort(rng.choice(len(b), s.bag_size, replace=False)) if len(b) > s.bag_size else None for b in bags]
    x, mask, window, y = collate(bags, rows, device)
    if s.instance_dropout > 0:
        mask = drop_instances(mask, s.instance_dropout, rng)
    return x, mask, window, y


def _length_batches(bags: Sequence[Bag], max_instances: int) -> list[list[int]]:
    """Group bags of similar length so padded inference batches stay under ``max_instances`` rows."""
    order = sorted(range(len(bags)), key=lambda i: len(bags[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * len(bags[i]) > max_instances:
            batches.append(current)
            current = []
        current.append(i)
    return batches + ([current] if current else [])


@torch.inference_mode()
def infer(model: torch.nn.Module, bags: Sequence[Bag], device: torch.device,
          max_instances: int = 32768) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Whole-bag forward pass: raw outputs (n, n_out) on the CPU and the attention over each bag's instances.

    The results are copied into arrays allocated before the first batch (views of one buffer per bag), never kept
    as views of a batch's tensors: small results allocated between a batch's large temporaries pinned the heap, and
    a 5,000-bag pass grew the process by ≈ 1.3 MB per bag (benchmarks/RESULTS.md ``## scale``)."""
    model.eval()
    lengths = [len(b) for b in bags]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.empty(int(starts[-1]), np.float32)
    outs: torch.Tensor | None = None
    for batch in _length_batches(bags, max_instances):
        x, mask, window, _ = collate([bags[i] for i in batch], device=device)
        with autocast_for(device):
            out, a = model(x, mask, window)
        if outs is None:
            outs = torch.empty((len(bags), out.shape[1]), dtype=torch.float32)
        rows = torch.as_tensor(batch)
        outs[rows] = out.float().cpu()
        a = a.float().cpu().numpy()
        for j, i in enumerate(batch):
            flat[starts[i] : starts[i + 1]] = a[j, : lengths[i]]
    assert outs is not None or not bags, "every bag is in a batch"
    if outs is None:
        outs = torch.empty((0, 0))
    return outs, [flat[starts[i] : starts[i + 1]] for i in range(len(bags))]


def new_model(spec: TaskSpec, in_dim: int, n_windows: int, s: MilTraining) -> torch.nn.Module:
    return build_model(s.model, in_dim, spec.n_out, n_windows=n_windows, window_embedding=s.window_embedding,
                       hidden=s.hidden, dropout=s.dropout, standardize=s.standardize)


def train_model(spec: TaskSpec, loss_fn: LossFn, train: Sequence[Bag], val: Sequence[Bag], s: MilTraining, *,
                n_windows: int, seed: int, device: torch.device, desc: str = "train") -> tuple[torch.nn.Module, list]:
    """Train one model; early stopping keeps the weights of the epoch with the lowest validation loss.

    Returns the model (best epoch, eval mode, on ``device``) and the per-epoch history
    ``[{"epoch", "train_loss", "val_loss", "steps"}]``.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = new_model(spec, train[0].feats.shape[1], n_windows, s)
    if s.standardize:
        scaler = model.scaler
        assert isinstance(scaler, FeatureScaler), "standardize gives the model a FeatureScaler"
        scaler.fit(np.asarray(b.feats) for b in train)
    model = model.to(device)
    opt = adamw(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    batch = effective_batch_size(len(train), s)
    LOG.info("%s: %d training bags, %d validation bags, batch %d (%d steps/epoch)", desc, len(train), len(val),
             batch, math.ceil(len(train) / batch))

    def batches():
        order = rng.permutation(len(train))
        return (order[start : start + batch] for start in range(0, len(train), batch))

    def step_loss(chosen: np.ndarray) -> tuple[torch.Tensor, int]:
        bags = [train[i] for i in chosen]
        x, mask, window, y = training_batch(bags, s, rng, device)
        with autocast_for(device):
            out, _ = model(x, mask, window)
        return loss_fn(out.float(), y), len(bags)

    with training_threads(device.type == "cpu", LOG.info, desc):
        history = run_epochs(model, opt, epochs=s.epochs, patience=s.patience, batches=batches, step_loss=step_loss,
                             val_loss=(lambda: validation_loss(model, loss_fn, val, device, s.eval_instances)) if val
                             else None, desc=desc)
    return model, history


def validation_loss(model: torch.nn.Module, loss_fn: LossFn, val: Sequence[Bag], device: torch.device,
                    max_instances: int = 32768) -> float:
    """Loss of the whole validation part at once on whole bags (one risk set for the Cox loss)."""
    out, _ = infer(model, val, device, max_instances)
    y = torch.from_numpy(np.stack([b.y for b in val]).astype(np.float32))
    return float(loss_fn(out, y))


def mil_flops(model: torch.nn.Module, train: Sequence[Bag], s: MilTraining,
              device: torch.device) -> tuple[int, int]:
    """FLOPs of one training step and of one whole-bag forward, probed on zeros of the typical shape: a batch of
    the effective batch size with bags of the median training length (capped at ``bag_size``)."""
    n = int(np.median([len(b) for b in train]))
    dim = train[0].feats.shape[1]

    def inputs(bags: int, length: int) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(bags, length, dim, device=device), torch.ones(bags, length, dtype=torch.bool, device=device),
                torch.zeros(bags, length, dtype=torch.long, device=device))

    x = inputs(effective_batch_size(len(train), s), min(n, s.bag_size))
    step = step_flops(model, lambda m: m(*x)[0])
    one = inputs(1, n)
    with torch.inference_mode():
        item = count_flops(lambda: model(*one))
    return step, item

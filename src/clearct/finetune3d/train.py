"""Training and inference of one 3D network on whole volumes.

Same recipe as the MIL models where it carries over: AdamW, the task's loss from :mod:`clearct.modeling.tasks`, one
validation pass per epoch on the job's validation patients, early stopping on that loss (the best epoch's weights
are kept, :class:`~clearct.common.training.EarlyStopping`), bf16 autocast on CUDA only. Batches are built from
the cached int16 grids: light augmentation (training only), then one channel per HU window.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from clearct.common.compute import count_flops, step_flops
from clearct.common.device import autocast_for
from clearct.common.errors import ClearctError
from clearct.common.training import adamw, run_epochs
from clearct.config import VolumeTraining
from clearct.finetune3d.models import build_net, load_backbone
from clearct.finetune3d.volumes import VolumePrep, augment, channels
from clearct.modeling.tasks import LossFn, TaskSpec

LOG = logging.getLogger("clearct")


@dataclass
class VolumeItem:
    """One scan for the 3D model: its label and (once loaded) its grid."""

    scan_id: str
    patient_id: str
    path: Path
    y: np.ndarray
    hu: np.ndarray | None = None  # (z, y, x) int16 on the VolumePrep grid
    series: str | None = None  # scans.csv's series_uid: which series of a DICOM folder

    @property
    def grid(self) -> np.ndarray:
        """``hu`` once loaded (load_volume_items loads every item it returns)."""
        assert self.hu is not None, f"{self.scan_id}: grid not loaded"
        return self.hu


def batch_input(items: Sequence[VolumeItem], prep: VolumePrep, device: torch.device,
                rng: np.random.Generator | None = None) -> torch.Tensor:
    """(B, C, z, y, x) float input; augmented when ``rng`` is given (training)."""
    hu = torch.from_numpy(np.stack([it.grid for it in items]))
    if rng is not None:
        hu = augment(hu, rng, shift=[max(1, g // 16) for g in prep.grid])
    return channels(hu.to(device), prep.windows)


def new_net(spec: TaskSpec, prep: VolumePrep, s: VolumeTraining) -> torch.nn.Module:
    assert s.width is not None, "volume_settings fills the width"
    return build_net(s.arch, len(prep.windows), spec.n_out, s.width)


@torch.inference_mode()
def infer(net: torch.nn.Module, items: Sequence[VolumeItem], prep: VolumePrep, device: torch.device,
          batch_size: int) -> torch.Tensor:
    """Raw outputs (n, n_out) on the CPU, in eval mode."""
    net.eval()
    outs = []
    for start in range(0, len(items), batch_size):
        with autocast_for(device):
            outs.append(net(batch_input(items[start : start + batch_size], prep, device)).float().cpu())
    return torch.cat(outs) if outs else torch.zeros(0, 0)


def batches(order: np.ndarray, size: int) -> list[np.ndarray]:
    """Consecutive batches of ``order``; a last batch of one volume joins the one before (BatchNorm in training
    needs two values per channel, and deep layers of small grids are 1×1×1)."""
    parts = [order[i : i + size] for i in range(0, len(order), size)]
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [np.concatenate(parts[-2:])]
    return parts


def train_volumes(spec: TaskSpec, loss_fn: LossFn, train: Sequence[VolumeItem], val: Sequence[VolumeItem],
                  prep: VolumePrep, s: VolumeTraining, *, seed: int, device: torch.device, weights: Path | None = None,
                  desc: str = "train") -> tuple[torch.nn.Module, list, str | None]:
    """Train one network; returns it (best epoch, eval mode), the per-epoch history and the sha256 of the
    initial weights (None for random initialisation)."""
    if len(train) < 2:
        raise ClearctError(f"{desc}: {len(train)} training scan(s); a 3D network with BatchNorm needs at least 2")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = new_net(spec, prep, s)
    init = load_backbone(net, s.arch, weights) if weights is not None else None
    net = net.to(device)
    opt = adamw(net.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    LOG.info("%s: %d training scans, %d validation scans, batch %d (%d steps/epoch)", desc, len(train), len(val),
             s.batch_size, len(batches(np.arange(len(train)), s.batch_size)))

    def step_loss(chosen: np.ndarray) -> tuple[torch.Tensor, int]:
        items = [train[i] for i in chosen]
        x = batch_input(items, prep, device, rng if s.augment else None)
        y = torch.from_numpy(np.stack([it.y for it in items]).astype(np.float32)).to(device)
        with autocast_for(device, enabled=s.amp):
            out = net(x)
        return loss_fn(out.float(), y), len(items)

    history = run_epochs(net, opt, epochs=s.epochs, patience=s.patience,
                         batches=lambda: batches(rng.permutation(len(train)), s.batch_size), step_loss=step_loss,
                         val_loss=(lambda: validation_loss(net, loss_fn, val, prep, device, s.batch_size)) if val
                         else None, desc=desc)
    return net, history, init


def validation_loss(net: torch.nn.Module, loss_fn: LossFn, val: Sequence[VolumeItem], prep: VolumePrep,
                    device: torch.device, batch_size: int) -> float:
    """Loss of the whole validation part at once (one risk set for the Cox loss)."""
    out = infer(net, val, prep, device, batch_size)
    return float(loss_fn(out, torch.from_numpy(np.stack([it.y for it in val]).astype(np.float32))))


def volume_flops(net: torch.nn.Module, prep: VolumePrep, batch_size: int, device: torch.device) -> tuple[int, int]:
    """FLOPs of one training step (a full batch, forward + backward) and of one scan's forward; every input has
    the grid's shape, so the estimate is exact up to the shorter last batch."""
    x = torch.zeros(batch_size, len(prep.windows), *prep.grid, device=device)
    step = step_flops(net, lambda m: m(x))
    one = x[:1]
    with torch.inference_mode():
        item = count_flops(lambda: net(one))
    return step, item

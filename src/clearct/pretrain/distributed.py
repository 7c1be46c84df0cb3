"""torch.distributed helpers for pretraining under torchrun: process group, key gathering, cross-rank BatchNorm.

MoCo v3 relies on BatchNorm statistics over the *global* batch (SyncBatchNorm). torch's SyncBatchNorm runs only on
accelerators, so :class:`GlobalBatchNorm` computes the batch mean and variance with autograd-aware all-reduces
(whose backward all-reduces the gradients). On CPU (gloo) and on GPU
(nccl) alike, N ranks × batch b then give the same forward values and, after DDP's gradient averaging, the same
gradients as one process with batch N·b.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1): nccl on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def gather_keys(x: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor over all ranks in rank order, without gradient; the identity in one process."""
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of every rank's input is the sum of the output gradients of all ranks."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x) if is_distributed() else x


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics cover the batch of every rank (plain BatchNorm in one process)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        count = _all_reduce_sum(xf.new_tensor(float(xf.numel() // xf.shape[1])))
        mean = _all_reduce_sum(xf.sum(dims)) / count
        var = _all_reduce_sum(((xf - mean.view(shape)) ** 2).sum(dims)) / count
        if self.track_running_stats:
            # present whenever track_running_stats is on
            tracked, running_mean, running_var = self.num_batches_tracked, self.running_mean, self.running_var
            assert tracked is not None and running_mean is not None and running_var is not None
            with torch.no_grad():
                tracked.add_(1)
                rate = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                running_mean.lerp_(mean.detach().to(running_mean.dtype), rate)
                unbiased = var.detach() * count / (count - 1)
                running_var.lerp_(unbiased.to(running_var.dtype), rate)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


M = TypeVar("M", bound=nn.Module)


def convert_global_batchnorm(module: M) -> M:
    """Replace every BatchNorm in ``module`` (in place, recursively) by :class:`GlobalBatchNorm`, keeping state."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, GlobalBatchNorm):
            ref = child.running_mean if child.running_mean is not None else child.weight
            factory: dict[str, Any] = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats, **factory)
            new.load_state_dict(child.state_dict())
            for theirs, ours in zip(child.parameters(), new.parameters()):
                ours.requires_grad_(theirs.requires_grad)  # the momentum branch stays frozen
            new.train(child.training)
            setattr(module, name, new)
        else:
            convert_global_batchnorm(child)
    return module

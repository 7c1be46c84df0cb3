"""MoCo v3 around any registry encoder: projector, predictor, momentum encoder and the symmetric loss.

As MoCo v3 (ViT recipe): projector = 3-layer MLP, predictor = 2-layer MLP, each hidden layer
Linear(bias=False) + BN + ReLU; the projector ends in BN without affine, the predictor in a plain Linear.
The momentum branch (trunk + projector) is an exponential moving average of the query branch (parameters only,
updated before the keys are computed) and runs without gradients.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from clearct.pretrain.distributed import gather_keys, is_distributed
from clearct.pretrain.losses import Variant, contrastive_loss


def build_mlp(num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, *, last_bn: bool) -> nn.Sequential:
    """MoCo v3 MLP: (Linear(bias=False), BN, ReLU) × (num_layers−1), Linear(bias=False) [+ BN(affine=False)]."""
    layers: list[nn.Module] = []
    for i in range(num_layers):
        d_in = in_dim if i == 0 else hidden_dim
        d_out = out_dim if i == num_layers - 1 else hidden_dim
        layers.append(nn.Linear(d_in, d_out, bias=False))
        if i < num_layers - 1:
            layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


class MoCo(nn.Module):
    """Query branch (trunk → projector → predictor) and momentum branch (trunk → projector)."""

    def __init__(self, trunk: nn.Module, embed_dim: int, *, dim: int = 256, mlp_dim: int = 4096, tau: float = 0.2):
        super().__init__()
        self.tau = tau
        self.trunk = trunk
        self.projector = build_mlp(3, embed_dim, mlp_dim, dim, last_bn=True)
        self.predictor = build_mlp(2, dim, mlp_dim, dim, last_bn=False)
        self.momentum_trunk = copy.deepcopy(trunk)
        self.momentum_projector = copy.deepcopy(self.projector)
        for p in self._momentum_params():
            p.requires_grad_(False)

    def _momentum_params(self):
        yield from self.momentum_trunk.parameters()
        yield from self.momentum_projector.parameters()

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        online: list[torch.Tensor] = [*self.trunk.parameters(), *self.projector.parameters()]
        target = list(self._momentum_params())
        torch._foreach_mul_(target, m)
        torch._foreach_add_(target, online, alpha=1.0 - m)

    def forward(
        self,
        x1: torch.Tensor,
        x2: torch.Tensor,
        m: float,
        lesion: torch.Tensor | None = None,
        *,
        lam: float = 0.0,
        variant: Variant = "paper",
        include_own_positive: bool = False,
    ) -> torch.Tensor:
        """Symmetric loss ctr(q1, k2) + ctr(q2, k1) over the global batch; x2 is the momentum-side (lesion-crop) view.

        ``lesion`` (b,) marks this rank's samples whose views are lesion crops; keys and the mask are gathered
        over ranks and this rank's positives sit at ``rank × b`` in the gathered keys.
        """
        q1 = self.predictor(self.projector(self.trunk(x1)))
        q2 = self.predictor(self.projector(self.trunk(x2)))
        with torch.no_grad():
            self.update_momentum(m)
            k1 = gather_keys(self.momentum_projector(self.momentum_trunk(x1)))
            k2 = gather_keys(self.momentum_projector(self.momentum_trunk(x2)))
            mask = None if lesion is None else gather_keys(lesion.to(k1.device, torch.uint8)).bool()
        offset = torch.distributed.get_rank() * x1.shape[0] if is_distributed() else 0
        kw: dict[str, Any] = {"tau": self.tau, "lesion_mask": mask, "lam": lam, "variant": variant,
              "include_own_positive": include_own_positive, "offset": offset}
        # the loss in (at least) fp32 even under bf16 autocast
        with torch.autocast(x1.device.type, enabled=False):
            q1, q2, k1, k2 = (_at_least_fp32(t) for t in (q1, q2, k1, k2))
            return contrastive_loss(q1, k2, **kw) + contrastive_loss(q2, k1, **kw)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))

"""2 CPU processes (gloo) × batch b give the same losses and weights as 1 process × batch 2b."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from clearct.pretrain.train import LossSpec, build_moco, train_step, wrap_ddp

STEPS = 2
BATCH = 8  # global


class TinyTrunk(nn.Module):
    """Conv + BatchNorm (a BN in the trunk too, as the ViT conv stem) + pool.

    The conv has no bias, as before every BN in the encoders: a bias in front of BN gets an exactly-zero gradient
    whose rounding noise AdamW would blow up to ±lr, differently in each setting.
    """

    embed_dim = 8

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten())

    def forward(self, x):
        return self.net(x)


def _data():
    g = torch.Generator().manual_seed(7)
    x1 = torch.randn(STEPS, BATCH, 3, 16, 16, generator=g, dtype=torch.float64)
    x2 = torch.randn(STEPS, BATCH, 3, 16, 16, generator=g, dtype=torch.float64)
    lesion = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0], dtype=torch.bool)
    return x1, x2, lesion


def _run(rank: int, world: int, port: int, out: str) -> None:
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_moco(TinyTrunk(), dim=6, mlp_dim=16, tau=0.2, distributed=world > 1).double()
    net = wrap_ddp(model, torch.device("cpu"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0, weight_decay=0.1)
    x1, x2, lesion = _data()
    part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    spec = LossSpec(lam=3.0, variant="official")
    losses = []
    for s in range(STEPS):
        loss = train_step(net, optimizer, x1[s, part], x2[s, part], lesion[part], lr=1e-2, m=0.9,
                          loss_spec=spec, device=torch.device("cpu"))
        losses.append(loss.item())
    if rank == 0:
        torch.save({"losses": losses, "state": model.state_dict()}, out)
    if world > 1:
        # the other rank's losses: the global loss is their mean (equal local batches)
        gathered = [None] * world
        dist.all_gather_object(gathered, losses)
        if rank == 0:
            torch.save({"losses": [sum(v) / world for v in zip(*gathered)], "state": model.state_dict()}, out)
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_the_combined_batch(tmp_path):
    single, double = tmp_path / "single.pt", tmp_path / "ddp.pt"
    _run(0, 1, 0, str(single))
    mp.spawn(_run, args=(2, _free_port(), str(double)), nprocs=2, join=True)
    a = torch.load(single, weights_only=True)
    b = torch.load(double, weights_only=True)
    assert a["losses"] == [pytest.approx(v, rel=1e-9, abs=1e-10) for v in b["losses"]]
    # the weights moved, and moved identically (query and momentum branches, heads, BN running statistics)
    torch.manual_seed(0)
    init = build_moco(TinyTrunk(), dim=6, mlp_dim=16, tau=0.2, distributed=False)
    assert not torch.allclose(a["state"]["trunk.net.0.weight"], init.state_dict()["trunk.net.0.weight"].double())
    assert a["state"].keys() == b["state"].keys()
    for key, value in a["state"].items():
        torch.testing.assert_close(b["state"][key], value, rtol=1e-9, atol=1e-10, msg=key)


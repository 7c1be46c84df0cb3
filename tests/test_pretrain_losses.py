"""Reference values for the MoCo v3 / LECL loss and the schedules, computed independently in float64 (1e-8)."""

from __future__ import annotations

import pytest
import torch

from clearct.pretrain.losses import contrastive_loss
from clearct.pretrain.schedules import learning_rate, momentum


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


Q1 = _t([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
K2 = _t([[1, 0.1, 0], [0, 1, 0.2], [0.1, 0, 1], [0, 1, 1]])
Q2 = _t([[0.5, 0.5, 0], [0, 1, 1], [1, 0, 1], [1, 0, 0]])
K1 = _t([[1, 1, 0.1], [0, 0.5, 1], [1, 0.2, 1], [1, -0.2, 0]])
MASK = torch.tensor([1, 0, 1, 1], dtype=torch.bool)
TAU = 0.5


def ctr(q, k, **kw):
    return contrastive_loss(q, k, tau=TAU, **kw).item()


def sym(**kw):
    return ctr(Q1, K2, **kw) + ctr(Q2, K1, **kw)


def test_plain_moco_v3():
    assert ctr(Q1, K2) == pytest.approx(0.7939863061, abs=1e-8)
    assert sym() == pytest.approx(1.5927318221, abs=1e-8)


@pytest.mark.parametrize(
    ("variant", "lam", "one", "both"),
    [
        ("paper", 1, 1.1121256033, 2.2842122350),
        ("paper", 3, 1.5410664953, 3.1964235531),
        ("official", 1, 1.1121256033, 2.2842122350),
        ("official", 3, 2.3276822391, 4.9727013810),
    ],
)
def test_lecl_variants(variant, lam, one, both):
    kw = {"lesion_mask": MASK, "lam": lam, "variant": variant}
    assert ctr(Q1, K2, **kw) == pytest.approx(one, abs=1e-8)
    assert sym(**kw) == pytest.approx(both, abs=1e-8)


@pytest.mark.parametrize(("lam", "value"), [(1, 1.3412084030), (3, 1.9465436117)])
def test_lesion_sum_with_own_positive(lam, value):
    assert ctr(Q1, K2, lesion_mask=MASK, lam=lam, include_own_positive=True) == pytest.approx(value, abs=1e-8)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_all_zero_mask_is_plain_moco_exactly(variant):
    zero = torch.zeros(4, dtype=torch.bool)
    for lam in (0.0, 1.0, 3.0):
        assert ctr(Q1, K2, lesion_mask=zero, lam=lam, variant=variant) == ctr(Q1, K2)
    # λ = 0 in the paper's equation is plain MoCo whatever the mask (LECL-0's loss)
    assert ctr(Q1, K2, lesion_mask=MASK, lam=0.0) == pytest.approx(ctr(Q1, K2), abs=1e-15)


@pytest.mark.parametrize(
    ("kw", "rank0", "rank1"),
    [
        ({}, 0.5009494213, 1.0870231910),
        ({"lesion_mask": MASK, "lam": 1, "variant": "official"}, 0.7895966296, 1.4346545770),
        ({"lesion_mask": MASK, "lam": 3, "variant": "official"}, 1.5465470937, 3.1088173845),
    ],
)
def test_split_over_two_ranks(kw, rank0, rank1):
    # rank r holds query rows 2r, 2r+1; keys (and the mask) are the gathered global batch
    got = [ctr(Q1[2 * r : 2 * r + 2], K2, offset=2 * r, **kw) for r in (0, 1)]
    assert got == [pytest.approx(rank0, abs=1e-8), pytest.approx(rank1, abs=1e-8)]
    # the mean over equal-sized ranks is the single-process loss
    assert sum(got) / 2 == pytest.approx(ctr(Q1, K2, **kw), abs=1e-12)


def test_gradient_flows_to_queries_only_through_the_loss():
    q = Q1.clone().requires_grad_(True)
    loss = contrastive_loss(q, K2, tau=TAU, lesion_mask=MASK, lam=3.0)
    loss.backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="variant"):
        contrastive_loss(Q1, K2, tau=TAU, variant="other")


def test_learning_rate_schedule():
    kw = {"base_lr": 1.5e-4, "batch_size": 256, "epochs": 100, "warmup_epochs": 10}
    assert learning_rate(0, **kw) == 0.0
    assert learning_rate(5, **kw) == pytest.approx(7.5e-5, abs=1e-12)
    assert learning_rate(10, **kw) == pytest.approx(1.5e-4, abs=1e-12)
    assert learning_rate(55, **kw) == pytest.approx(7.5e-5, abs=1e-12)
    assert learning_rate(100, **kw) == pytest.approx(0.0, abs=1e-12)
    # the linear scaling rule and fractional (per-step) epochs
    assert learning_rate(10, **{**kw, "batch_size": 1024}) == pytest.approx(6e-4, abs=1e-12)
    assert learning_rate(2.5, **kw) == pytest.approx(3.75e-5, abs=1e-12)


def test_momentum_schedule():
    assert momentum(0, m0=0.99, epochs=100) == pytest.approx(0.99, abs=1e-12)
    assert momentum(50, m0=0.99, epochs=100) == pytest.approx(0.995, abs=1e-12)
    assert momentum(100, m0=0.99, epochs=100) == pytest.approx(1.0, abs=1e-12)
    assert momentum(25, m0=0.99, epochs=100) < momentum(25.5, m0=0.99, epochs=100)

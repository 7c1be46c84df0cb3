"""Instance dropout (MilTraining.instance_dropout): masked instances get zero attention in training batches, bags keep
their length, and 0.0 trains bitwise like the code before the option existed."""

from __future__ import annotations

import numpy as np
import torch

from clearct.config import MilTraining
from clearct.mil import train as mil_train
from clearct.mil.data import Bag
from clearct.mil.planted import planted_bags
from clearct.modeling.tasks import make_loss, make_task

SPEC = make_task("multilabel", ["a", "b"], {"a": ["0", "1"], "b": ["0", "1"]})


def _bags(n: int = 24, length: int = 20) -> list[Bag]:
    return [Bag(pb.features.scan_id, pb.features.patient_id, pb.features.feats, pb.features.window,
                pb.features.slice_index, pb.features.z_mm, pb.labels.astype(np.float32))
            for pb in planted_bags(n, dim=8, instances=(length, length), targets=2, shift=3.0, seed=0)]


def _train(bags: list[Bag], s: MilTraining) -> dict[str, torch.Tensor]:
    loss = make_loss(SPEC, np.stack([b.y for b in bags]))
    model, _ = mil_train.train_model(SPEC, loss, bags, [], s, n_windows=1, seed=3, device=torch.device("cpu"))
    return model.state_dict()


def test_drop_instances_masks_real_instances_only_and_keeps_one_per_bag():
    mask = torch.zeros(300, 10, dtype=torch.bool)
    for i in range(300):
        mask[i, : 1 + i % 10] = True  # lengths 1..10, the rest padding
    mask[0] = False  # an empty row stays empty
    kept = mil_train.drop_instances(mask, 0.4, np.random.default_rng(0))
    assert kept.shape == mask.shape and not (kept & ~mask).any()  # padding never comes back
    assert bool(kept[1:].any(dim=1).all()) and not kept[0].any()
    share = 1 - kept[1:].sum().item() / mask[1:].sum().item()
    assert 0.3 < share < 0.45  # ≈ 0.4, a little less: single-instance bags keep theirs


def test_dropped_instances_get_zero_attention_in_training_batches(monkeypatch):
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    build = mil_train.new_model

    def spying_model(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_hook(lambda m, inputs, out: seen.append((inputs[1].clone(), out[1].detach().clone()))
                                    if m.training else None)
        return model

    monkeypatch.setattr(mil_train, "new_model", spying_model)
    _train(_bags(), MilTraining(epochs=2, min_steps=8, instance_dropout=0.5))
    assert len(seen) >= 8
    masked = 0
    for mask, attention in seen:
        assert mask.shape[1] == 20  # every bag has 20 instances and no padding: the bag keeps its length
        assert bool(mask.any(dim=1).all())
        assert torch.equal(attention[~mask], torch.zeros_like(attention[~mask]))
        torch.testing.assert_close(attention.sum(dim=1), torch.ones(len(attention)))
        masked += int((~mask).sum())
    share = masked / sum(m.numel() for m, _ in seen)
    assert 0.4 < share < 0.6


def test_zero_dropout_trains_bitwise_like_the_batches_without_the_option(monkeypatch):
    bags = _bags()
    s = MilTraining(epochs=3, min_steps=30, bag_size=12)  # subsampling on: the random stream must stay the same
    assert s.instance_dropout == 0.0
    ours = _train(bags, MilTraining(**{**s.model_dump(), "instance_dropout": 0.0}))

    def batch_before_the_option(chosen, settings, rng, device="cpu"):
        rows = [np.sort(rng.choice(len(b), settings.bag_size, replace=False)) if len(b) > settings.bag_size
                else None for b in chosen]
        return mil_train.collate(chosen, rows, device)

    monkeypatch.setattr(mil_train, "training_batch", batch_before_the_option)
    before = _train(bags, s)
    monkeypatch.undo()
    dropped = _train(bags, MilTraining(**{**s.model_dump(), "instance_dropout": 0.3}))
    assert all(torch.equal(ours[k], before[k]) for k in ours)
    assert not all(torch.equal(dropped[k], before[k]) for k in ours)  # the option does act when it is on

"""MIL math: masked attention, losses, splits, metrics against scikit-learn, vectorised bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from clearct.evaluate.metrics import (
    bootstrap_weights,
    concordance_index,
    weighted_metrics,
)
from clearct.evaluate.splits import iterative_stratification, make_splits
from clearct.evaluate.tables import Predictions, compute_metrics
from clearct.mil.models import build_model, list_mil_models, masked_softmax
from clearct.mil.train import MilTraining, effective_batch_size
from clearct.modeling.losses import cox_partial_likelihood
from clearct.modeling.tasks import make_task, parse_label


def test_masked_softmax_gives_padding_zero_attention():
    scores = torch.tensor([[5.0, 1.0, 100.0, 100.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    w = masked_softmax(scores, mask)
    assert torch.all(w[0, 2:] == 0) and torch.allclose(w[0].sum(), torch.tensor(1.0))
    assert torch.all(w[1] == 0)  # a bag of padding only: zeros, not NaN


@pytest.mark.parametrize("kind", list_mil_models())
def test_padding_does_not_change_the_output(kind):
    torch.manual_seed(0)
    model = build_model(kind, 16, 3, n_windows=2, window_embedding=True).eval()
    x = torch.randn(1, 7, 16)
    win = torch.randint(0, 2, (1, 7))
    out, a = model(x, torch.ones(1, 7, dtype=torch.bool), win)
    padded = torch.cat([x, torch.randn(1, 5, 16) * 50], dim=1)
    mask = torch.tensor([[True] * 7 + [False] * 5])
    out_p, a_p = model(padded, mask, torch.cat([win, torch.zeros(1, 5, dtype=torch.long)], 1))
    assert torch.allclose(out, out_p, atol=1e-5)
    assert torch.all(a_p[0, 7:] == 0) and torch.allclose(a_p[0, :7], a[0], atol=1e-6)


def test_the_registry_builds_every_model_and_refuses_unknown_names_and_settings():
    assert {"abmil", "gated", "meanpool", "mlp"} <= set(list_mil_models())
    with pytest.raises(Exception, match="unknown MIL model 'transmil'"):
        build_model("transmil", 16, 3)
    with pytest.raises(TypeError, match="windw_embedding"):
        build_model("mlp", 16, 3, windw_embedding=True)  # a misspelt setting is an error, not silently dropped
    wide = build_model("abmil", 16, 3, hidden=64)
    assert wide.V.out_features == 64  # the attention is as wide as the instance encoder


def test_cox_partial_likelihood_matches_the_definition():
    risk = torch.tensor([0.3, -1.0, 2.0, 0.5])
    time = torch.tensor([5.0, 2.0, 1.0, 8.0])
    event = torch.tensor([1.0, 0.0, 1.0, 1.0])
    expected = 0.0
    for i in range(4):
        if event[i]:
            at_risk = time >= time[i]
            expected -= float(risk[i] - torch.log(torch.exp(risk[at_risk]).sum()))
    assert float(cox_partial_likelihood(risk, time, event)) == pytest.approx(expected / 3, rel=1e-6)


def test_label_parsing_rejects_unknown_values():
    spec = make_task("multilabel", ["a", "b"], {"a": ["0", "1"], "b": ["1", "0"]})
    assert parse_label(spec, ["1", "no"]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="a='maybe'"):
        parse_label(spec, ["maybe", "0"])
    mc = make_task("multiclass", ["stage"], {"stage": ["I", "II", "III", "II"]})
    assert mc.classes == ["I", "II", "III"] and mc.n_out == 3
    with pytest.raises(ValueError, match="IV"):
        parse_label(mc, ["IV"])


def test_step_floor_shrinks_the_batch_on_small_cohorts():
    s = MilTraining()  # batch 128, 32 epochs, min_steps 2000
    assert effective_batch_size(128, s) == 2  # 64 steps/epoch × 32 = 2048 ≥ 2000
    assert effective_batch_size(100_000, s) == 128


def test_iterative_stratification_balances_rare_labels():
    rng = np.random.default_rng(0)
    y = rng.random((300, 4)) < np.array([0.5, 0.2, 0.05, 0.1])
    fold = iterative_stratification(y, [1.0] * 5, np.random.default_rng(1))
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= 2
    per_fold = np.stack([y[fold == k].sum(0) for k in range(5)])
    assert (per_fold.max(0) - per_fold.min(0) <= 1).all()  # each label spread to within one example


def test_splits_never_share_a_patient():
    patients = [f"p{i}" for i in range(53)]
    strat = (np.random.default_rng(2).random((53, 2)) < 0.3)
    for nested in (False, True):
        s = make_splits(patients, strat, folds=4, seed=0, nested=nested, test_frac=0.2)
        outer = {j.outer: set(j.test) for j in s.jobs}
        assert sum(len(t) for t in outer.values()) + len(s.holdout) == 53
        for j in s.jobs:
            parts = [set(j.train), set(j.val), set(j.test), set(s.holdout)]
            assert sum(map(len, parts)) == len(set().union(*parts))  # disjoint
        assert len(s.jobs) == (16 if nested else 4)


def _random_preds(n: int = 120, seed: int = 0) -> Predictions:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < 0.4).astype(float)
    s = np.round(np.clip(y * 0.3 + rng.random((n, 2)) * 0.7, 0, 1), 2)  # rounding makes ties
    return Predictions("multilabel", ["a", "b"], np.array([f"p{i // 2}" for i in range(n)]),
                       np.array([f"s{i}" for i in range(n)]), np.repeat(np.arange(1, 4), n // 3), y, s,
                       np.full((n, 2), 0.5))


def test_weighted_metrics_equal_scikit_learn():
    p = _random_preds()
    rng = np.random.default_rng(5)
    w = np.vstack([np.ones(len(p.y)), rng.integers(0, 4, size=(3, len(p.y)))]).astype(float)
    y, s, pred = p.column(0)
    got = weighted_metrics("multilabel", y, s, pred, w)
    for b, wb in enumerate(w):
        assert got["auroc"][b] == pytest.approx(skm.roc_auc_score(y, s, sample_weight=wb))
        assert got["auprc"][b] == pytest.approx(skm.average_precision_score(y, s, sample_weight=wb))
        assert got["f1"][b] == pytest.approx(skm.f1_score(y, pred, sample_weight=wb))
        assert got["accuracy"][b] == pytest.approx(skm.accuracy_score(y, pred, sample_weight=wb))


def test_metrics_table_agrees_with_scikit_learn_and_has_cis():
    p = _random_preds()
    rows = {(r["target"], r["metric"]): r for r in compute_metrics(p, "cv", n_boot=1000, seed=0)}
    y, s = p.y[:, 1], p.scores[:, 1]
    assert rows[("b", "auroc")]["value"] == pytest.approx(skm.roc_auc_score(y, s))
    assert rows[("b", "auprc")]["value"] == pytest.approx(skm.average_precision_score(y, s))
    assert rows[("b", "f1")]["value"] == pytest.approx(skm.f1_score(y, s >= 0.5))
    r = rows[("b", "auroc")]
    assert r["ci_low"] < r["value"] < r["ci_high"]
    fold_auc = [skm.roc_auc_score(y[p.folds == k], s[p.folds == k]) for k in (1, 2, 3)]
    assert r["fold_mean"] == pytest.approx(np.mean(fold_auc))
    assert rows[("macro", "auroc")]["value"] == pytest.approx(
        np.mean([skm.roc_auc_score(p.y[:, j], p.scores[:, j]) for j in range(2)]))


def test_bootstrap_resamples_whole_patients():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    w = bootstrap_weights(groups, 500, seed=0)
    assert w.shape == (500, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 5]).all()
    assert (w[:, [0, 2, 3]].sum(1) == 3).all()  # three patients drawn per resample


def test_concordance_index():
    time = np.array([1.0, 2.0, 3.0, 4.0])
    event = np.array([1.0, 1.0, 0.0, 1.0])
    assert concordance_index(time, event, -time) == 1.0
    assert concordance_index(time, event, time) == 0.0


def test_feature_scaler_matches_numpy_and_is_saved_with_the_model(tmp_path):

    from clearct.mil.store import load_model
    from clearct.mil.train import new_model
    from clearct.modeling.store import save_model

    rng = np.random.default_rng(0)
    parts = [rng.normal(3.0, 0.5, size=(n, 6)).astype(np.float16) for n in (5, 40, 17)]
    parts[1][:, 2] = 7.0  # a constant feature must pass through, not divide by zero
    spec = make_task("multilabel", ["a"], {"a": ["0", "1"]})
    settings = MilTraining(standardize=True)
    model = new_model(spec, 6, 1, settings)
    model.scaler.fit(parts)
    rows = np.concatenate(parts).astype(np.float64)
    np.testing.assert_allclose(model.scaler.mean.numpy(), rows.mean(0), rtol=1e-5)
    np.testing.assert_allclose(model.scaler.std.numpy(), rows.std(0), rtol=1e-4)
    constant = new_model(spec, 6, 1, settings).scaler
    constant.fit([parts[1]])
    assert constant.std[2] == 1.0 and torch.isfinite(constant(torch.from_numpy(parts[1]).float())).all()

    save_model(tmp_path / "m", model, {"settings": settings.model_dump(), "task": spec.to_json(), "in_dim": 6,
                                       "n_windows": 1})
    loaded, _ = load_model(tmp_path / "m")
    x = torch.randn(2, 9, 6)
    mask, window = torch.ones(2, 9, dtype=torch.bool), torch.zeros(2, 9, dtype=torch.long)
    torch.testing.assert_close(loaded(x, mask, window)[0], model.eval()(x, mask, window)[0])
    assert torch.equal(loaded.scaler.mean, model.scaler.mean)


def test_standardizing_rescues_features_with_a_large_common_component():
    """Frozen-encoder features often look like offset + small spread; the planted signal is 3 sd of the spread.
    With a short schedule (the demo's 200 steps at lr 1e-4) only the standardized model finds it."""
    from sklearn.metrics import roc_auc_score

    from clearct.mil.data import Bag
    from clearct.mil.planted import planted_bags
    from clearct.mil.train import infer, train_model
    from clearct.modeling.tasks import make_loss, scores_from_outputs

    offset = np.random.default_rng(99).normal(size=32) * 2.0

    def encoder_like(n: int, seed: int) -> list[Bag]:
        return [Bag(pb.features.scan_id, pb.features.patient_id, (offset + 0.1 * pb.features.feats).astype(np.float32),
                    pb.features.window, pb.features.slice_index, pb.features.z_mm, pb.labels.astype(np.float32))
                for pb in planted_bags(n, dim=32, targets=2, shift=3.0, seed=seed)]

    spec = make_task("multilabel", ["a", "b"], {"a": ["0", "1"], "b": ["0", "1"]})
    train, test = encoder_like(80, 0), encoder_like(60, 1)
    y = np.stack([b.y for b in test])
    auroc = {}
    for standardize in (False, True):
        s = MilTraining(epochs=10, min_steps=200, standardize=standardize)
        model, _ = train_model(spec, make_loss(spec, np.stack([b.y for b in train])), train, [], s, n_windows=1,
                               seed=0, device=torch.device("cpu"))
        scores = scores_from_outputs(spec, infer(model, test, torch.device("cpu"))[0]).numpy()
        auroc[standardize] = min(roc_auc_score(y[:, j], scores[:, j]) for j in range(2))
    assert auroc[True] > 0.9, auroc
    assert auroc[False] < 0.8, auroc


def test_the_shared_adamw_is_fused_and_steps_like_the_per_tensor_loop():
    from clearct.common.training import adamw

    torch.manual_seed(0)
    params = [torch.randn(7, 5, requires_grad=True), torch.randn(5, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_(True) for p in params]
    fused = adamw(params, lr=1e-2, weight_decay=0.1)
    loop = torch.optim.AdamW(twins, lr=1e-2, weight_decay=0.1, foreach=False)
    assert fused.defaults["fused"] is True
    for _ in range(3):
        for group, opt in ((params, fused), (twins, loop)):
            opt.zero_grad()
            (group[0].sum(0) * group[1]).square().sum().backward()
            opt.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)

"""Bags read lazily through a small feature cache give the results of bags held in memory (crossval, deploy,
attention)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clearct.cli import main
from clearct.mil.data import FeatureCache, LazyFeats, load_cohort
from clearct.mil.planted import planted_bags, write_planted_cohort

FAST = ["--folds", "2", "--epochs", "2", "--min-steps", "20", "--bootstrap", "20", "--device", "cpu",
        "--targets", "t0", "--use-windows", "abdomen", "--no-error-viewers"]


@pytest.mark.slow  # four crossval/deploy runs: ≈ 10 s CPU
def test_lazy_bags_give_the_in_memory_results(tmp_path):
    bags = planted_bags(16, dim=8, instances=(6, 12), windows=2, seed=1)
    labels = write_planted_cohort(tmp_path / "train", bags)
    external = write_planted_cohort(tmp_path / "ext", planted_bags(8, dim=8, instances=(6, 12), windows=2, seed=2,
                                                                     prefix="e"))
    outs = {}
    for name, extra in (("memory", []), ("lazy", ["--feature-memory-gb", "2e-6"])):  # 2 kB: ≈ 2 bags at a time
        cv, dep = tmp_path / f"cv-{name}", tmp_path / f"deploy-{name}"
        assert main(["crossval", "--features", str(tmp_path / "train" / "features"), "--labels", str(labels),
                     "--out", str(cv), *FAST, *extra]) == 0
        assert main(["deploy", "--model", str(cv), "--features", str(tmp_path / "ext" / "features"), "--labels",
                     str(external), "--out", str(dep), "--bootstrap", "20", "--device", "cpu", "--no-error-viewers",
                     *extra]) == 0
        attn = tmp_path / f"attention-{name}"
        assert main(["attention", "--model", str(cv), "--features", str(tmp_path / "ext" / "features"), "--out",
                     str(attn), "--figures", "0", "--device", "cpu", *extra]) == 0
        outs[name] = cv, dep, attn
    # float32 kernels may round differently by memory layout (seen: 1e-7), and 40 optimiser steps carry that up to
    # ≈ 1e-4; a wrong or stale bag moves weights and probabilities by far more than the 1e-3 allowed here
    for a, b in zip(outs["memory"][:2], outs["lazy"][:2]):
        rows_a, rows_b = (list(csv.DictReader((d / "predictions.csv").read_text().splitlines())) for d in (a, b))
        same = ("patient_id", "scan_id", "set", "fold", "target", "label")
        assert [[r[k] for k in same] for r in rows_a] == [[r[k] for k in same] for r in rows_b] and len(rows_a) > 0
        for k in ("probability", "threshold"):
            np.testing.assert_allclose([float(r[k]) for r in rows_a], [float(r[k]) for r in rows_b], atol=1e-3)
    for folder in (1, 2):  # the same rows; weights equal up to float32 rounding of differently batched bags
        a, b = (list(csv.DictReader((outs[name][folder] / "attention.csv").read_text().splitlines()))
                for name in ("memory", "lazy"))
        assert [{k: v for k, v in r.items() if k != "attention"} for r in a] == \
            [{k: v for k, v in r.items() if k != "attention"} for r in b] and len(a) > 0
        np.testing.assert_allclose([float(r["attention"]) for r in a], [float(r["attention"]) for r in b], atol=1e-6)
    for fold in ("fold-1", "fold-2"):
        a, b = (load_file(outs[name][0] / fold / "model.safetensors") for name in ("memory", "lazy"))
        assert a.keys() == b.keys() and len(a) > 0
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-3)


def test_the_cache_stays_within_its_bytes_and_rereads_evicted_bags(tmp_path):
    write_planted_cohort(tmp_path, planted_bags(6, dim=8, instances=(10, 10), seed=0, dtype=np.float16))
    cohort = load_cohort(tmp_path / "features", None, None, cache_bytes=2 * 10 * 8 * 2)  # two bags of float16
    memory = load_cohort(tmp_path / "features", None, None)
    cache = None
    for _ in range(2):
        for lazy, held in zip(cohort.bags, memory.bags):
            assert isinstance(lazy.feats, LazyFeats)
            assert np.array_equal(np.asarray(lazy.feats), held.feats)
            cache = lazy.feats.cache
            assert isinstance(cache, FeatureCache) and cache.bytes <= 2 * 10 * 8 * 2
    assert cache is not None and cache.reads == 12  # every bag twice: the cache holds two of six

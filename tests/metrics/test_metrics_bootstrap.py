"""Bootstrap CIs and paired comparisons: vectorised equals materialised resamples, seeding, coverage, p-values."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn import metrics as skm

from fmprobe.metrics import (
    MetricUndefined,
    bootstrap_ci,
    bootstrap_p_value,
    paired_bootstrap,
    roc_auc,
)

pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")


def _scores(rng: np.random.Generator, n: int, c: int, ties: bool) -> np.ndarray:
    """Row-stochastic scores; with ``ties`` drawn from a few integer levels so many values repeat."""
    raw = rng.integers(1, 4, size=(n, c)).astype(float) if ties else rng.random((n, c)) + 1e-3
    return raw / raw.sum(axis=1, keepdims=True)


def test_bootstrap_vectorised_equals_materialised_resamples() -> None:
    """The weighted kernels give exactly what sklearn gives on the same explicit resamples."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 120)
    s = _scores(rng, 120, 3, ties=True)
    fast = bootstrap_ci("roc_auc", y, s, n_resamples=200, seed=5)
    slow = bootstrap_ci(lambda a, b: skm.roc_auc_score(a, b, multi_class="ovr"), y, s, n_resamples=200, seed=5)
    assert (fast.low, fast.high) == pytest.approx((slow.low, slow.high), abs=1e-12)
    kappa = bootstrap_ci("quadratic_kappa", y, s, n_resamples=200, seed=5)
    kappa_slow = bootstrap_ci(
        lambda a, b: skm.cohen_kappa_score(a, b.argmax(1), weights="quadratic", labels=[0, 1, 2]),
        y,
        s,
        n_resamples=200,
        seed=5,
    )
    assert tuple(kappa) == pytest.approx(tuple(kappa_slow), abs=1e-12)


def test_bootstrap_is_seeded_stratified_and_fast() -> None:
    rng = np.random.default_rng(0)
    n = 10_000
    y = rng.integers(0, 5, n)
    s = _scores(rng, n, 5, ties=False)
    t = time.perf_counter()
    ci = bootstrap_ci("roc_auc", y, s, n_resamples=1000, seed=7)
    assert time.perf_counter() - t < 20  # ~1 s on a laptop core; a Python loop would take minutes
    low, high = ci  # unpacks like the contract's (low, high)
    assert low < ci.estimate < high and ci.n_undefined == 0 and ci.n_resamples == 1000
    assert tuple(bootstrap_ci("roc_auc", y, s, n_resamples=1000, seed=7)) == (low, high)
    assert tuple(bootstrap_ci("roc_auc", y, s, n_resamples=1000, seed=8)) != (low, high)
    # one positive among 50: stratified resamples always keep it, so AUC is defined on every resample
    yb = np.r_[1, np.zeros(49, dtype=int)]
    assert bootstrap_ci("roc_auc", yb, rng.random(50)).n_undefined == 0


def test_too_many_undefined_resamples_raise() -> None:
    rng = np.random.default_rng(0)
    y = np.zeros((50, 1), dtype=int)
    y[0] = 1  # plain (unstratified) resampling: ~36% of resamples lose the only positive
    with pytest.raises(MetricUndefined, match="bootstrap resamples"):
        bootstrap_ci("roc_auc", y, rng.random((50, 1)), stratify=False)
    ci = bootstrap_ci("roc_auc", y, rng.random((50, 1)), max_undefined=0.5, stratify=False)
    assert 250 < ci.n_undefined < 480
    assert bootstrap_ci("roc_auc", y, rng.random((50, 1))).n_undefined == 0  # per-label stratified by default


def test_bootstrap_ci_coverage_of_known_accuracy() -> None:
    """Predictions right with probability 0.8: the 95% CI should contain 0.8 in ~95% of simulations."""
    rng = np.random.default_rng(2024)
    n, p, hits = 200, 0.8, 0
    for sim in range(200):
        y = rng.integers(0, 2, n)
        correct = rng.random(n) < p
        pred = np.where(correct, y, 1 - y)
        low, high = bootstrap_ci("accuracy", y, np.eye(2)[pred], n_resamples=1000, seed=sim)
        hits += low <= p <= high
    assert 0.90 <= hits / 200 <= 0.99


def test_paired_bootstrap() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    good = np.clip(0.3 * y + 0.7 * rng.random(400), 0, 1)
    noise = rng.random(400)
    same = paired_bootstrap("roc_auc", y, good, good)
    assert (same.diff, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    cmp = paired_bootstrap("roc_auc", y, good, noise, seed=3)
    assert cmp.diff == pytest.approx(roc_auc(y, good) - roc_auc(y, noise))
    assert 0 < cmp.low < cmp.diff < cmp.high and cmp.p_value < 0.01
    assert cmp.rel_gain == pytest.approx(cmp.diff / roc_auc(y, noise))
    assert cmp.rel_low < cmp.rel_gain < cmp.rel_high
    rev = paired_bootstrap("roc_auc", y, noise, good, seed=3)
    assert rev.diff == -cmp.diff and rev.p_value == cmp.p_value
    assert (rev.low, rev.high) == pytest.approx((-cmp.high, -cmp.low))
    # two equally good noisy models: no significant difference most of the time
    other = np.clip(0.3 * y + 0.7 * rng.random(400), 0, 1)
    assert paired_bootstrap("roc_auc", y, good, other).p_value > 0.05


def test_p_value_formula() -> None:
    assert bootstrap_p_value(np.ones(999)) == pytest.approx(2 / 1000)
    assert bootstrap_p_value(np.r_[-np.ones(100), np.ones(899)]) == pytest.approx(2 * 101 / 1000)
    assert bootstrap_p_value(np.zeros(10)) == 1.0

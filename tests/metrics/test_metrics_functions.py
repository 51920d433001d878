"""Metrics against scikit-learn (property-based), hand-worked kappa, undefined cases, bootstrap behaviour."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from fmprobe.errors import UnknownNameError
from fmprobe.metrics import (
    METRICS,
    PRIMARY_METRIC,
    MetricInputError,
    MetricUndefined,
    accuracy,
    balanced_accuracy,
    bootstrap_ci,
    bootstrap_p_value,
    compute_all,
    macro_f1,
    paired_bootstrap,
    quadratic_kappa,
    roc_auc,
)

pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def _scores(rng: np.random.Generator, n: int, c: int, ties: bool) -> np.ndarray:
    """Row-stochastic scores; with ``ties`` drawn from a few integer levels so many values repeat."""
    raw = rng.integers(1, 4, size=(n, c)).astype(float) if ties else rng.random((n, c)) + 1e-3
    return raw / raw.sum(axis=1, keepdims=True)


def _single_label(seed: int, n: int, c: int, ties: bool, all_present: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    if all_present:
        y[:c] = np.arange(c)
    return y, _scores(rng, n, c, ties)


@SETTINGS
@given(seed=st.integers(0, 2**31), n=st.integers(6, 300), c=st.integers(2, 6), ties=st.booleans())
def test_single_label_metrics_match_sklearn(seed: int, n: int, c: int, ties: bool) -> None:
    y, s = _single_label(seed, n, c, ties, all_present=True)
    pred = s.argmax(axis=1)
    assert accuracy(y, s) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert balanced_accuracy(y, s) == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-12)
    assert macro_f1(y, s) == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    expected_auc = skm.roc_auc_score(y, s[:, 1]) if c == 2 else skm.roc_auc_score(y, s, multi_class="ovr")
    assert roc_auc(y, s) == pytest.approx(expected_auc, abs=1e-12)
    try:
        kappa = quadratic_kappa(y, s)
    except MetricUndefined:  # sklearn gives NaN (with a warning) in exactly this case
        assert len(np.unique(y)) == 1 and np.array_equal(np.unique(pred), np.unique(y))
    else:
        expected = skm.cohen_kappa_score(y, pred, weights="quadratic", labels=np.arange(c))
        assert kappa == pytest.approx(expected, abs=1e-10)


@SETTINGS
@given(seed=st.integers(0, 2**31), n=st.integers(5, 200), c=st.integers(3, 6))
def test_multiclass_auc_skips_absent_classes(seed: int, n: int, c: int) -> None:
    """With a class missing from y_true, AUC is the mean one-vs-rest AUC over the classes present."""
    y, s = _single_label(seed, n, c, ties=True, all_present=False)
    present = [k for k in range(c) if 0 < (y == k).sum() < n]
    if not present:
        with pytest.raises(MetricUndefined):
            roc_auc(y, s)
        return
    expected = np.mean([skm.roc_auc_score(y == k, s[:, k]) for k in present])
    assert roc_auc(y, s) == pytest.approx(expected, abs=1e-12)


@SETTINGS
@given(seed=st.integers(0, 2**31), n=st.integers(5, 200), n_labels=st.integers(2, 6), ties=st.booleans())
def test_multilabel_metrics_match_sklearn(seed: int, n: int, n_labels: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < rng.uniform(0.02, 0.6, n_labels)).astype(int)
    s = np.round(rng.random((n, n_labels)), 1) if ties else rng.random((n, n_labels))
    pred = (s > 0.5).astype(int)
    assert accuracy(y, s) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)  # exact-match accuracy
    per_label_bacc = [skm.balanced_accuracy_score(y[:, j], pred[:, j]) for j in range(n_labels)]
    assert balanced_accuracy(y, s) == pytest.approx(np.mean(per_label_bacc), abs=1e-12)
    expected_f1 = skm.f1_score(y, pred, average="macro", zero_division=np.nan)
    if np.isnan(expected_f1):
        with pytest.raises(MetricUndefined):
            macro_f1(y, s)
    else:
        assert macro_f1(y, s) == pytest.approx(expected_f1, abs=1e-12)
    ok = [j for j in range(n_labels) if 0 < y[:, j].sum() < n]
    if ok:
        expected_auc = np.mean([skm.roc_auc_score(y[:, j], s[:, j]) for j in ok])
        assert roc_auc(y, s) == pytest.approx(expected_auc, abs=1e-12)
    else:
        with pytest.raises(MetricUndefined, match="every label"):
            roc_auc(y, s)
    with pytest.raises(MetricUndefined, match="multilabel"):
        quadratic_kappa(y, s)


def _onehot(pred: list[int], c: int) -> np.ndarray:
    return np.eye(c)[pred]


@pytest.mark.parametrize(
    ("y_true", "y_pred", "c", "expected"),
    [
        ([0, 1, 2, 3], [0, 1, 2, 3], 4, 1.0),  # perfect agreement
        ([0, 1, 2], [2, 1, 0], 3, -1.0),  # observed 8 = 2x expected 4
        ([0, 0, 1, 1], [0, 1, 1, 1], 2, 0.5),  # observed 1 vs expected 2
        # class 2 absent: the weight of (3, 0) is 9 (distance in class indices), observed 10 vs expected 12.5
        ([0, 1, 3, 3], [1, 1, 3, 0], 4, 0.2),
    ],
)
def test_quadratic_kappa_hand_worked(y_true: list[int], y_pred: list[int], c: int, expected: float) -> None:
    assert quadratic_kappa(np.array(y_true), _onehot(y_pred, c)) == pytest.approx(expected, abs=1e-12)


def test_kappa_uses_class_indices_not_only_present_labels() -> None:
    """sklearn without ``labels`` would treat classes 1 and 3 as neighbours when 2 is absent."""
    y, pred = np.array([0, 1, 3, 3]), [1, 1, 3, 0]
    naive = skm.cohen_kappa_score(y, pred, weights="quadratic")
    assert quadratic_kappa(y, _onehot(pred, 4)) != pytest.approx(naive)


@pytest.mark.parametrize(
    ("metric", "y_true", "y_score", "reason"),
    [
        (roc_auc, [1, 1, 1], [[0.2, 0.8], [0.4, 0.6], [0.9, 0.1]], "only class"),
        (roc_auc, [2, 2], [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]], "only class"),
        (roc_auc, [[1, 0], [1, 0]], [[0.3, 0.1], [0.6, 0.2]], "every label"),
        (quadratic_kappa, [1, 1], [[0.2, 0.8], [0.4, 0.6]], "no expected disagreement"),
        (quadratic_kappa, [[1, 0], [0, 1]], [[0.3, 0.1], [0.6, 0.2]], "multilabel"),
        (macro_f1, [[0, 0], [0, 0]], [[0.3, 0.1], [0.4, 0.2]], "macro-F1 is undefined"),
        (accuracy, np.zeros(0, dtype=int), np.zeros((0, 2)), "no samples"),
    ],
)
def test_undefined_metrics_raise_with_reason(metric, y_true, y_score, reason: str) -> None:
    with pytest.raises(MetricUndefined, match=reason):
        metric(np.asarray(y_true), np.asarray(y_score))


def test_bad_inputs_are_input_errors() -> None:
    with pytest.raises(MetricInputError, match="columns"):
        accuracy(np.array([0, 3]), np.array([[0.5, 0.5], [0.5, 0.5]]))
    with pytest.raises(MetricInputError, match="NaN"):
        roc_auc(np.array([0, 1]), np.array([[np.nan, 1.0], [0.5, 0.5]]))
    with pytest.raises(MetricInputError, match="shape"):
        roc_auc(np.ones((3, 2), dtype=int), np.ones((3, 3)) / 2)


def test_binary_scores_may_be_one_column() -> None:
    y, s = np.array([0, 0, 1, 1, 1]), np.array([0.1, 0.6, 0.4, 0.7, 0.9])
    assert roc_auc(y, s) == roc_auc(y, np.stack([1 - s, s], axis=1)) == pytest.approx(skm.roc_auc_score(y, s))


def test_registry_and_primary_metrics() -> None:
    assert set(METRICS) == {"accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "quadratic_kappa"}
    assert PRIMARY_METRIC == {
        "binary": "roc_auc",
        "multiclass": "balanced_accuracy",
        "ordinal": "quadratic_kappa",
        "multilabel": "roc_auc",
    }
    with pytest.raises(UnknownNameError, match="Closest: roc_auc"):
        METRICS.get("roc_acu")


def test_compute_all_values_reasons_and_cis() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((300, 3)) < 0.3).astype(int)
    y[:, 2] = 0  # a label without positives is skipped by AUC
    s = np.clip(y * 0.4 + rng.random((300, 3)) * 0.6, 0, 1)
    out = compute_all(y, s, "multilabel", n_resamples=300, seed=1)
    assert out["quadratic_kappa"].value is None and "multilabel" in out["quadratic_kappa"].reason
    auc = out["roc_auc"]
    assert auc.value == pytest.approx(np.mean([skm.roc_auc_score(y[:, j], s[:, j]) for j in (0, 1)]))
    assert auc.ci_low < auc.value < auc.ci_high and auc.reason is None
    for name in ("accuracy", "balanced_accuracy", "macro_f1"):
        v = out[name]
        assert v.ci_low <= v.value <= v.ci_high, name
    with pytest.raises(MetricInputError, match="multilabel"):
        compute_all(y, s, "multiclass")
    with pytest.raises(MetricInputError, match="2 columns"):
        compute_all(np.array([0, 1, 2]), np.eye(3), "binary")


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
    y[0] = 1  # multilabel resampling is plain: ~36% of resamples lose the only positive
    with pytest.raises(MetricUndefined, match="bootstrap resamples"):
        bootstrap_ci("roc_auc", y, rng.random((50, 1)))
    ci = bootstrap_ci("roc_auc", y, rng.random((50, 1)), max_undefined=0.5)
    assert 250 < ci.n_undefined < 480


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

"""Metric functions against scikit-learn (property-based), hand-worked kappa, undefined cases, the registry."""

from __future__ import annotations

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
    compute_all,
    macro_f1,
    quadratic_kappa,
    roc_auc,
)
from fmprobe.tasks import TASK_TYPES

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


def test_every_task_is_judged_by_a_registered_metric_defined_on_it() -> None:
    rng = np.random.default_rng(0)
    y1, s1 = _single_label(0, 60, 3, ties=False, all_present=True)
    y2 = (rng.random((60, 3)) < 0.4).astype(int)
    examples = {"binary": (y1 % 2, _scores(rng, 60, 2, False)), "multiclass": (y1, s1), "ordinal": (y1, s1),
                "multilabel": (y2, rng.random((60, 3)))}  # fmt: skip
    for task in TASK_TYPES:
        y, s = examples[task]
        out = compute_all(y, s, task, metrics=[PRIMARY_METRIC[task]])
        assert out[PRIMARY_METRIC[task]].ok, task
    with pytest.raises(UnknownNameError, match="Closest: roc_auc"):
        METRICS.get("roc_acu")

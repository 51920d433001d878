"""Missing multilabel entries (-1, CheXpert's ``uncertain=ignore``) in the metrics and their bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from fmprobe.metrics import (
    MISSING,
    MetricInputError,
    MetricUndefined,
    Prepared,
    accuracy,
    balanced_accuracy,
    bootstrap_ci,
    compute_all,
    get_metric,
    macro_f1,
    paired_bootstrap,
    resample_weights,
    roc_auc,
)

pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


def _with_missing(rng: np.random.Generator, y: np.ndarray, rate: float) -> np.ndarray:
    out = y.copy()
    out[rng.random(y.shape) < rate] = MISSING
    return out


# --------------------------------------------------------------------------- reference: per label on known rows


def _per_label(y: np.ndarray, fn) -> list[float]:
    """fn(y_j, j) on each label's known rows; NaN where there is none or fn is undefined there."""
    out = []
    for j in range(y.shape[1]):
        rows = y[:, j] != MISSING
        out.append(fn(rows, j) if rows.any() else np.nan)
    return out


def _reference(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    pred = (s > 0.5).astype(int)

    def auc(rows, j):
        yj = y[rows, j]
        return skm.roc_auc_score(yj, s[rows, j]) if 0 < yj.sum() < len(yj) else np.nan

    def f1(rows, j):
        return skm.f1_score(y[rows, j], pred[rows, j], zero_division=np.nan)

    def bacc(rows, j):  # sklearn's balanced accuracy averages the recalls of the classes present in y_true
        return skm.balanced_accuracy_score(y[rows, j], pred[rows, j])

    known = y != MISSING
    counted = known.any(axis=1)
    exact = ((pred == y) | ~known).all(axis=1)
    with np.errstate(invalid="ignore"):
        return {
            "roc_auc": np.nanmean(_per_label(y, auc)) if np.isfinite(_per_label(y, auc)).any() else np.nan,
            "macro_f1": np.nanmean(_per_label(y, f1)) if np.isfinite(_per_label(y, f1)).any() else np.nan,
            "balanced_accuracy": np.nanmean(_per_label(y, bacc)) if known.any() else np.nan,
            "accuracy": exact[counted].mean() if counted.any() else np.nan,
        }


@SETTINGS
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(4, 200),
    n_labels=st.integers(1, 6),
    rate=st.sampled_from([0.0, 0.1, 0.3, 0.7, 0.95]),
    ties=st.booleans(),
)
def test_metrics_equal_per_label_metrics_on_known_rows(
    seed: int, n: int, n_labels: int, rate: float, ties: bool
) -> None:
    rng = np.random.default_rng(seed)
    y = _with_missing(rng, (rng.random((n, n_labels)) < rng.uniform(0.05, 0.6, n_labels)).astype(int), rate)
    s = np.round(rng.random((n, n_labels)), 1) if ties else rng.random((n, n_labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on single-class labels; those are NaN in the reference
        expected = _reference(y, s)
    for name, value in expected.items():
        metric = get_metric(name)
        if np.isnan(value):
            with pytest.raises(MetricUndefined):
                metric(y, s)
        else:
            assert metric(y, s) == pytest.approx(value, abs=1e-12), name


def test_hand_worked_definitions() -> None:
    y = np.array([[1, -1], [0, 1], [-1, 0], [1, 0], [-1, -1]])
    s = np.array([[0.9, 0.9], [0.2, 0.4], [0.7, 0.1], [0.4, 0.3], [0.5, 0.5]])
    # label 0 known on rows 0, 1, 3 (truth 1, 0, 1; scores .9 .2 .4): AUC 1; label 1 on rows 1-3 (1, 0, 0): AUC 1
    assert roc_auc(y, s) == 1.0
    # predictions: [1 1] [0 0] [1 0] [0 0] [0 0]; known entries right: rows 0, 2 (row 4 has none: skipped)
    assert accuracy(y, s) == pytest.approx(2 / 4)
    # label 0: recall(1) = 1/2, recall(0) = 1 -> 0.75; label 1: recall(1) = 0, recall(0) = 1 -> 0.5
    assert balanced_accuracy(y, s) == pytest.approx((0.75 + 0.5) / 2)
    # label 0: tp 1, fn 1, fp 0 -> 2/3; label 1: tp 0, fn 1 -> 0
    assert macro_f1(y, s) == pytest.approx((2 / 3 + 0) / 2)


def test_labels_without_known_entries_are_skipped_and_all_missing_is_undefined() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((50, 3)) < 0.4).astype(int)
    s = rng.random((50, 3))
    y_missing = y.copy()
    y_missing[:, 2] = MISSING  # a label never known
    assert roc_auc(y_missing, s) == pytest.approx(roc_auc(y[:, :2], s[:, :2]), abs=1e-12)
    assert macro_f1(y_missing, s) == pytest.approx(macro_f1(y[:, :2], s[:, :2]), abs=1e-12)
    assert balanced_accuracy(y_missing, s) == pytest.approx(balanced_accuracy(y[:, :2], s[:, :2]), abs=1e-12)
    assert accuracy(y_missing, s) == pytest.approx(accuracy(y[:, :2], s[:, :2]), abs=1e-12)
    one_class = y_missing.copy()
    one_class[one_class[:, 1] == 0, 1] = MISSING  # label 1's known entries are all positive
    assert roc_auc(one_class, s) == pytest.approx(skm.roc_auc_score(y[:, 0], s[:, 0]), abs=1e-12)
    one_class[:, 0] = np.where(y[:, 0] == 1, 1, MISSING)
    with pytest.raises(MetricUndefined, match="only one class.*known"):
        roc_auc(one_class, s)
    nothing = np.full((50, 3), MISSING)
    for metric in (roc_auc, accuracy, balanced_accuracy, macro_f1):
        with pytest.raises(MetricUndefined, match="every y_true entry is missing"):
            metric(nothing, s)
    out = compute_all(nothing, s, "multilabel", n_resamples=50)
    assert all(v.value is None for v in out.values()) and "missing" in out["roc_auc"].reason


def test_single_label_minus_one_is_an_input_error_naming_it() -> None:
    with pytest.raises(MetricInputError, match=r"contains -1 .*missing label.*multilabel"):
        roc_auc(np.array([0, 1, -1, 1]), np.array([0.1, 0.8, 0.4, 0.7]))
    with pytest.raises(MetricInputError, match=r"contains -1"):
        balanced_accuracy(np.array([0, 2, -1]), np.full((3, 3), 1 / 3))
    with pytest.raises(MetricInputError, match=r"contains -1"):
        compute_all(np.array([0, 1, -1]), np.full((3, 2), 0.5), "binary")
    with pytest.raises(MetricInputError, match=r"only 0, 1 and -1.*\[2\]"):
        roc_auc(np.array([[0, 2], [1, -1]]), np.full((2, 2), 0.5))


# --------------------------------------------------------------------------- bootstrap


def _missing_case(seed: int = 0, n: int = 150, n_labels: int = 4, rate: float = 0.3):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < 0.35).astype(int)
    s = np.clip(0.35 * y + 0.65 * rng.random((n, n_labels)), 0, 1)
    return _with_missing(rng, y, rate), s


@pytest.mark.parametrize("name", ["roc_auc", "accuracy", "balanced_accuracy", "macro_f1"])
def test_vectorised_bootstrap_equals_materialised_resamples_with_missing(name: str) -> None:
    y, s = _missing_case(seed=3, n=80)
    metric = get_metric(name)
    W = next(resample_weights(None, len(y), 20, seed=5))
    batched = metric.batch(Prepared(y, s), W)
    for counts, value in zip(W.astype(int), batched, strict=True):
        idx = np.repeat(np.arange(len(y)), counts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = _reference(y[idx], s[idx])[name]
        if np.isnan(expected):
            assert np.isnan(value)
        else:
            assert value == pytest.approx(expected, abs=1e-12)


def test_bootstrap_ci_and_paired_comparison_with_missing() -> None:
    y, s = _missing_case(seed=1, n=400)
    ci = bootstrap_ci("roc_auc", y, s, n_resamples=500, seed=2)
    assert ci.estimate == pytest.approx(_reference(y, s)["roc_auc"], abs=1e-12)
    assert ci.low < ci.estimate < ci.high and ci.n_undefined == 0
    out = compute_all(y, s, "multilabel", n_resamples=300, seed=1)
    for name in ("roc_auc", "subset_accuracy", "label_accuracy", "balanced_accuracy", "macro_f1"):
        v = out[name]
        assert v.ci_low <= v.value <= v.ci_high and v.reason is None, name
    worse = np.clip(s + np.random.default_rng(9).normal(0, 0.3, s.shape), 0, 1)
    cmp = paired_bootstrap("roc_auc", y, s, worse, n_resamples=300, seed=4)
    assert cmp.diff > 0 and cmp.low <= cmp.diff <= cmp.high


# --------------------------------------------------------------------------- probes


# --------------------------------------------------------------------------- subsampling

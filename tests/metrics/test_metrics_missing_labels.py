"""Missing multilabel entries (-1, CheXpert's ``uncertain=ignore``): metrics, bootstrap, probes, subsampling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

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
from fmprobe.probes import KNNProbe, LGBMProbe, LogisticProbe, ProbeFitError, make_probe
from fmprobe.probing import subsample

pytestmark = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
FAST_LGBM = {"n_estimators": 60, "early_stopping_rounds": 10, "n_jobs": 1}


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
    for name in ("roc_auc", "accuracy", "balanced_accuracy", "macro_f1"):
        v = out[name]
        assert v.ci_low <= v.value <= v.ci_high and v.reason is None, name
    worse = np.clip(s + np.random.default_rng(9).normal(0, 0.3, s.shape), 0, 1)
    cmp = paired_bootstrap("roc_auc", y, s, worse, n_resamples=300, seed=4)
    assert cmp.diff > 0 and cmp.low <= cmp.diff <= cmp.high


# --------------------------------------------------------------------------- probes


def _ml_splits(seed: int = 0, n_labels: int = 4, d: int = 16, rate: float = 0.3):
    """Labels driven by a linear signal in the features; ~``rate`` of every split's entries are -1."""
    W = np.random.default_rng(99).normal(size=(d, n_labels))
    out = []
    for i, n in enumerate((400, 200, 200)):
        rng = np.random.default_rng(seed + i)
        X = rng.normal(size=(n, d))
        y = (X @ W / np.sqrt(d) + 0.5 * rng.normal(size=(n, n_labels)) > 0.3).astype(int)
        out.append((X.astype(np.float32), _with_missing(rng, y, rate)))
    return out


def _probe(name: str, **params):
    return make_probe(name, **({**FAST_LGBM, **params} if name == "lgbm" else params))


@pytest.mark.parametrize("name", ["logreg", "knn", "lgbm"])
def test_probes_train_on_missing_labels_and_beat_chance(name: str) -> None:
    (X, Y), (Xv, Yv), (Xt, Yt) = _ml_splits(seed=10)
    assert 0.25 < (Y == MISSING).mean() < 0.35
    probe = _probe(name, task="multilabel").fit(X, Y, eval_set=(Xv, Yv))
    proba = probe.predict_proba(Xt)
    assert probe.task_ == "multilabel" and proba.shape == Yt.shape
    assert np.all(np.isfinite(proba)) and np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_array_equal(probe.predict(Xt), (proba > 0.5).astype(int))
    assert roc_auc(Yt, proba) > 0.75, name
    # validation-based selection used the masked metric
    assert probe.val_score_ == pytest.approx(roc_auc(Yv, probe.predict_proba(Xv)), abs=1e-12)


@pytest.mark.parametrize("name", ["logreg", "knn", "lgbm"])
def test_missing_labels_leakage_guard(name: str) -> None:
    (X, Y), (Xv, Yv), (Xt, Yt) = _ml_splits(seed=20)

    def run(test_labels: np.ndarray):
        probe = _probe(name).fit(X, Y, eval_set=(Xv, Yv))
        proba = probe.predict_proba(Xt)
        return probe.best_params_, probe.val_score_, proba, roc_auc(test_labels, proba)

    params, val_score, proba, _ = run(Yt)
    params_p, val_score_p, proba_p, _ = run(np.random.default_rng(0).permutation(Yt))
    assert params == params_p and val_score == val_score_p
    np.testing.assert_array_equal(proba, proba_p)


def test_logreg_fits_each_label_on_its_known_rows() -> None:
    (X, Y), _, (Xt, _) = _ml_splits(seed=30)
    probe = LogisticProbe(C=0.3, tol=1e-8).fit(X, Y)
    Xs, Xts = StandardScaler().fit(X).transform(X), StandardScaler().fit(X).transform(Xt)
    for j in range(Y.shape[1]):
        rows = Y[:, j] != MISSING
        ref = LogisticRegression(C=0.3, tol=1e-8, max_iter=1000).fit(Xs[rows], Y[rows, j])
        np.testing.assert_allclose(probe.predict_proba(Xt)[:, j], ref.predict_proba(Xts)[:, 1], atol=1e-4)


@pytest.mark.parametrize("voting", ["majority", "weighted"])
def test_knn_votes_among_neighbours_that_know_the_label(voting: str) -> None:
    (X, Y), _, (Xt, _) = _ml_splits(seed=40)
    k = 7
    probe = KNNProbe(k=k, voting=voting).fit(X, Y)
    proba = probe.predict_proba(Xt)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    prior = np.array([Y[Y[:, j] != MISSING, j].mean() for j in range(Y.shape[1])])
    for i in range(0, len(Xt), 9):
        sims = Xn @ (Xt[i] / np.linalg.norm(Xt[i]))
        nn = np.lexsort((np.arange(len(X)), -sims))[:k]
        w = np.ones(k) if voting == "majority" else np.exp(sims[nn] / 0.07)
        for j in range(Y.shape[1]):
            known = Y[nn, j] != MISSING
            expected = (w * known * (Y[nn, j] == 1)).sum() / (w * known).sum() if known.any() else prior[j]
            assert proba[i, j] == pytest.approx(expected, abs=1e-6)  # float32 similarities


def test_knn_falls_back_to_the_training_prior() -> None:
    (X, Y), _, (Xt, _) = _ml_splits(seed=50)
    Y = Y.copy()
    Y[:, 0] = MISSING
    Y[:10, 0] = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]  # label 0 known on 10 rows only, prevalence 0.3
    Y[:, 1] = MISSING  # label 1 never known: prior 0.5
    proba = KNNProbe(k=1).fit(X, Y).predict_proba(Xt)
    assert np.isclose(proba[:, 0], 0.3).mean() > 0.9  # nearly every nearest neighbour lacks label 0
    np.testing.assert_array_equal(proba[:, 1], 0.5)


def test_lgbm_label_booster_equals_a_binary_booster_on_known_rows() -> None:
    (X, Y), (Xv, Yv), (Xt, _) = _ml_splits(seed=60)
    multi = LGBMProbe(**FAST_LGBM).fit(X, Y, eval_set=(Xv, Yv))
    for j in (0, 2):
        rows, vrows = Y[:, j] != MISSING, Yv[:, j] != MISSING
        single = LGBMProbe(**FAST_LGBM).fit(X[rows], Y[rows, j], eval_set=(Xv[vrows], Yv[vrows, j]))
        assert multi.best_params_["n_estimators"][j] == single.best_params_["n_estimators"]
        np.testing.assert_allclose(multi.predict_proba(Xt)[:, j], single.predict_proba(Xt)[:, 1], atol=1e-12)


@pytest.mark.parametrize("name", ["logreg", "knn", "lgbm"])
def test_label_never_known_in_train_or_validation(name: str) -> None:
    (X, Y), (Xv, Yv), (Xt, _) = _ml_splits(seed=70)
    Y, Yv = Y.copy(), Yv.copy()
    Y[:, 3] = MISSING  # no information at all: probability 0.5 everywhere
    Yv[:, 2] = MISSING  # not scorable on validation: left out of the selection metric
    probe = _probe(name).fit(X, Y, eval_set=(Xv, Yv))
    proba = probe.predict_proba(Xt)
    np.testing.assert_allclose(proba[:, 3], 0.5)
    assert np.all(np.isfinite(proba)) and np.ptp(proba[:, 2]) > 0
    assert probe.val_score_ == pytest.approx(roc_auc(Yv, probe.predict_proba(Xv)), abs=1e-12)


def test_probes_reject_minus_one_in_single_label_targets() -> None:
    (X, Y), (Xv, Yv), _ = _ml_splits(seed=80)
    y, yv = np.maximum(Y[:, 0], 0), np.maximum(Yv[:, 0], 0)
    y_bad, yv_bad = y.copy(), yv.copy()
    y_bad[:5], yv_bad[:5] = MISSING, MISSING
    for name in ("logreg", "knn", "lgbm"):
        with pytest.raises(ProbeFitError, match=r"y contains -1 .*missing label.*multilabel"):
            _probe(name, task="binary").fit(X, y_bad)
        with pytest.raises(ProbeFitError, match=r"contains -1 .*missing label"):
            _probe(name, classes=[0, 1]).fit(X, y_bad)
        with pytest.raises(ProbeFitError, match=r"eval_set y contains -1 .*missing label"):
            _probe(name).fit(X, y, eval_set=(Xv, yv_bad))
    with pytest.raises(ProbeFitError, match=r"0/1 with -1 = missing.*\[2\]"):
        LogisticProbe().fit(X, np.where(Y == MISSING, 2, Y))
    # scikit-learn semantics stay: with task='auto' and no classes, -1 is an ordinary class label
    assert LogisticProbe().fit(X, np.where(y == 0, -1, 1)).classes_.tolist() == [-1, 1]


# --------------------------------------------------------------------------- subsampling


def test_subsample_stratifies_multilabel_with_missing_entries() -> None:
    rng = np.random.default_rng(0)
    Y = (rng.random((1000, 5)) < 0.2).astype(int)
    Y_missing = _with_missing(rng, Y, 0.3)
    index = subsample(Y_missing, 0.25, seed=3)
    assert len(index) == pytest.approx(250, abs=5) and len(np.unique(index)) == len(index)
    np.testing.assert_array_equal(index, subsample(np.maximum(Y_missing, 0), 0.25, seed=3))  # -1 counts as 0
    positive = Y_missing > 0
    key = positive.argmax(axis=1) * positive.any(axis=1)
    for value in np.unique(key):  # every stratum keeps its share (and at least one row)
        members = key == value
        assert np.isin(np.flatnonzero(members), index).sum() == max(1, round(0.25 * members.sum()))

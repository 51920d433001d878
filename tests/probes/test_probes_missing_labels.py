"""Missing multilabel entries (-1, CheXpert's ``uncertain=ignore``) in the probes: each label is trained and
validated on its known rows; single-label targets refuse -1."""

from __future__ import annotations

import numpy as np
import pytest
from _probe_data import FAST_LGBM, assert_test_labels_cannot_change_choices, fast_probe
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from fmprobe.metrics import MISSING, roc_auc
from fmprobe.probes import KNNProbe, LGBMProbe, LogisticProbe, ProbeFitError


def _with_missing(rng: np.random.Generator, y: np.ndarray, rate: float) -> np.ndarray:
    out = y.copy()
    out[rng.random(y.shape) < rate] = MISSING
    return out


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


@pytest.mark.parametrize("name", ["logreg", "knn", "lgbm"])
def test_probes_train_on_missing_labels_and_beat_chance(name: str) -> None:
    (X, Y), (Xv, Yv), (Xt, Yt) = _ml_splits(seed=10)
    assert 0.25 < (Y == MISSING).mean() < 0.35
    probe = fast_probe(name, task="multilabel").fit(X, Y, eval_set=(Xv, Yv))
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
    assert_test_labels_cannot_change_choices(name, (X, Y), (Xv, Yv), Xt, Yt, roc_auc)


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
    probe = fast_probe(name).fit(X, Y, eval_set=(Xv, Yv))
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
            fast_probe(name, task="binary").fit(X, y_bad)
        with pytest.raises(ProbeFitError, match=r"contains -1 .*missing label"):
            fast_probe(name, classes=[0, 1]).fit(X, y_bad)
        with pytest.raises(ProbeFitError, match=r"eval_set y contains -1 .*missing label"):
            fast_probe(name).fit(X, y, eval_set=(Xv, yv_bad))
    with pytest.raises(ProbeFitError, match=r"0/1 with -1 = missing.*\[2\]"):
        LogisticProbe().fit(X, np.where(Y == MISSING, 2, Y))
    # scikit-learn semantics stay: with task='auto' and no classes, -1 is an ordinary class label
    assert LogisticProbe().fit(X, np.where(y == 0, -1, 1)).classes_.tolist() == [-1, 1]

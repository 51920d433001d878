"""Probes: scikit-learn contract, validation-only selection, equivalence with naive sklearn loops."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks

from fmprobe.errors import ProbeError, UnknownNameError
from fmprobe.metrics import balanced_accuracy, get_metric, quadratic_kappa, roc_auc
from fmprobe.probes import PROBES, KNNProbe, LGBMProbe, LogisticProbe, ProbeFitError, make_probe
from fmprobe.probes.knn import DEFAULT_KS, prefix_votes, topk

# LightGBM's threads slow tiny problems down; the tests use one thread and few rounds to stay fast.
FAST_LGBM = {"n_estimators": 60, "early_stopping_rounds": 10, "n_jobs": 1}


def _probe(name: str, **params) -> object:
    return make_probe(name, **({**FAST_LGBM, **params} if name == "lgbm" else params))


def _blobs(seed: int, n: int, d: int = 16, c: int = 3, sep: float = 0.6):
    """Structured features: class centres plus isotropic noise (hard enough that hyper-parameters matter)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).normal(size=(c, d))
    y = rng.integers(0, c, n)
    return (centres[y] * sep + rng.normal(size=(n, d))).astype(np.float32), y


def _splits(seed: int = 0, c: int = 3, d: int = 16):
    return [_blobs(seed + i, n, d, c) for i, n in enumerate((400, 200, 200))]


@parametrize_with_checks([LogisticProbe(), KNNProbe(), LGBMProbe(n_estimators=30, n_jobs=1)])
def test_sklearn_estimator_contract(estimator, check) -> None:
    check(estimator)


def test_registry_and_make_probe() -> None:
    assert list(PROBES) == ["logreg", "knn", "lgbm"]
    assert isinstance(make_probe("knn", k=5), KNNProbe) and make_probe("knn", k=5).k == 5
    with pytest.raises(UnknownNameError, match="Closest: logreg"):
        make_probe("logres")
    with pytest.raises(ProbeError, match="no parameter.*Cz.*valid: C, Cs"):
        make_probe("logreg", Cz=[1.0])


def test_wrong_feature_count_names_the_expected_number() -> None:
    (X, y), _, _ = _splits()
    probe = LogisticProbe().fit(X, y)
    with pytest.raises(ValueError, match="is expecting 16 features"):
        probe.predict(X[:, :10])


def test_knn_sweep_equals_sklearn_for_every_k_and_vote() -> None:
    (X, y), (Xv, yv), _ = _splits(seed=10)
    probe = KNNProbe().fit(X, y, eval_set=(Xv, yv))
    sims = np.empty((len(Xv), 200))
    idx = np.empty((len(Xv), 200), dtype=np.int64)
    for rows, s, i in topk(Xv, probe.train_features_, 200, block_size=64):
        sims[rows], idx[rows] = s, i
    scores = {(r["k"], r["voting"]): r["score"] for r in probe.search_results_}
    assert sorted({k for k, _ in scores}) == list(DEFAULT_KS)
    for voting, weights in (("majority", "uniform"), ("weighted", lambda d: np.exp((1 - d) / 0.07))):
        votes = prefix_votes(sims, idx, probe.train_targets_, list(DEFAULT_KS), voting, 0.07)
        for k in DEFAULT_KS:
            ref = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights=weights, algorithm="brute").fit(X, y)
            np.testing.assert_array_equal(votes[k].argmax(axis=1), ref.predict(Xv))
            np.testing.assert_allclose(votes[k], ref.predict_proba(Xv), atol=1e-6)
            assert scores[(k, voting)] == pytest.approx(balanced_accuracy(yv, ref.predict_proba(Xv)), abs=1e-12)


def test_knn_caps_k_at_train_size_and_blocks_do_not_change_results() -> None:
    (X, y), (Xv, yv), (Xt, _) = _splits()
    small = KNNProbe().fit(X[:30], y[:30], eval_set=(Xv, yv))
    assert max(r["k"] for r in small.search_results_) == 30
    a = KNNProbe(block_size=7).fit(X, y, eval_set=(Xv, yv))
    b = KNNProbe(block_size=4096).fit(X, y, eval_set=(Xv, yv))
    assert a.search_results_ == b.search_results_
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))


def test_logistic_c_path_matches_fresh_fit_at_chosen_c() -> None:
    (X, y), (Xv, yv), (Xt, _) = _splits(seed=20, d=32)
    probe = LogisticProbe(tol=1e-7).fit(X, y, eval_set=(Xv, yv))
    C = probe.best_params_["C"]
    assert 1e-4 < C < 1e4 and len(probe.search_results_) == 17
    mean, std = X.mean(axis=0), X.std(axis=0)
    fresh = LogisticRegression(C=C, tol=1e-7, max_iter=5000).fit((X - mean) / std, y)
    np.testing.assert_allclose(
        probe.predict_proba(Xt), fresh.predict_proba((Xt - mean) / std), atol=1e-3
    )  # float32 solver precision
    np.testing.assert_allclose(probe.coef_, fresh.coef_, atol=5e-3 * np.abs(fresh.coef_).max())
    # the sweep was warm-started: later C values start from the previous optimum
    assert sum(r["n_iter"] for r in probe.search_results_) < 17 * max(r["n_iter"] for r in probe.search_results_)


@pytest.mark.parametrize("name", ["logreg", "knn", "lgbm"])
def test_leakage_guard_test_labels_cannot_change_choices(name: str) -> None:
    (X, y), (Xv, yv), (Xt, yt) = _splits(seed=30)

    def run(test_labels: np.ndarray):
        probe = _probe(name).fit(X, y, eval_set=(Xv, yv))
        proba = probe.predict_proba(Xt)
        return probe.best_params_, probe.val_score_, proba, balanced_accuracy(test_labels, proba)

    params, val_score, proba, _ = run(yt)
    params_p, val_score_p, proba_p, _ = run(np.random.default_rng(0).permutation(yt))
    assert params == params_p and val_score == val_score_p
    np.testing.assert_array_equal(proba, proba_p)
    # the reported validation score is the selection metric of the chosen model on the validation set
    chosen = _probe(name).fit(X, y, eval_set=(Xv, yv))
    assert chosen.val_score_ == pytest.approx(balanced_accuracy(yv, chosen.predict_proba(Xv)), abs=1e-12)


def test_validation_labels_do_drive_the_choice() -> None:
    """Sanity for the guard above: the same probe picks differently when validation labels change."""
    (X, y), (Xv, yv), _ = _splits(seed=40)
    honest = KNNProbe().fit(X, y, eval_set=(Xv, yv)).best_params_
    shuffled = [KNNProbe().fit(X, y, eval_set=(Xv, np.roll(yv, s))).best_params_ for s in (1, 2, 3)]
    assert any(p != honest for p in shuffled)


@pytest.mark.parametrize("name", ["logreg", "knn", "lgbm"])
def test_deterministic(name: str) -> None:
    (X, y), (Xv, yv), (Xt, _) = _splits(seed=50)
    a = _probe(name).fit(X, y, eval_set=(Xv, yv))
    b = _probe(name).fit(X, y, eval_set=(Xv, yv))
    assert a.best_params_ == b.best_params_ and a.search_results_ == b.search_results_
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))


def test_lgbm_seed_matters_and_early_stopping_uses_validation() -> None:
    (X, y), (Xv, yv), (Xt, _) = _splits(seed=60)
    a = LGBMProbe(**FAST_LGBM, random_state=1).fit(X, y, eval_set=(Xv, yv))
    b = LGBMProbe(**FAST_LGBM, random_state=2).fit(X, y, eval_set=(Xv, yv))
    assert not np.array_equal(a.predict_proba(Xt), b.predict_proba(Xt))
    history = [r["score"] for r in a.search_results_]
    best = a.best_params_["n_estimators"]
    assert history[best - 1] == max(history) and history.index(max(history)) == best - 1  # first best round
    assert a.val_score_ == pytest.approx(max(history))
    no_val = LGBMProbe(**FAST_LGBM).fit(X, y)
    assert no_val.best_params_ == {"n_estimators": 60} and no_val.val_score_ is None
    pca = LGBMProbe(**FAST_LGBM, pca_components=4).fit(X, y, eval_set=(Xv, yv))
    assert pca.pca_.n_components_ == 4 and pca.predict_proba(Xt).shape == (200, 3)


def test_ties_go_to_the_most_regularised_candidate() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 150)
    X = (np.where(y[:, None] == 1, 5.0, -5.0) + rng.normal(size=(300, 4))).astype(np.float32)
    Xv, yv = X[::2] + 0.01, y[::2]  # perfectly separable: every candidate scores AUC 1
    logreg = LogisticProbe().fit(X, y, eval_set=(Xv, yv))
    assert all(r["score"] == 1.0 for r in logreg.search_results_) and logreg.best_params_ == {"C": 1e-4}
    knn = KNNProbe().fit(X, y, eval_set=(Xv, yv))
    assert knn.best_params_ == {"k": 200, "voting": "majority"}


def test_defaults_without_eval_set() -> None:
    (X, y), _, _ = _splits()
    for probe, params in (
        (LogisticProbe(C=0.5), {"C": 0.5}),
        (KNNProbe(k=7, voting="majority"), {"k": 7, "voting": "majority"}),
    ):
        probe.fit(X, y)
        assert probe.best_params_ == params and probe.val_score_ is None and probe.search_results_ == []


@pytest.mark.parametrize("name", ["logreg", "knn", "lgbm"])
def test_multilabel(name: str) -> None:
    (X, y), (Xv, yv), (Xt, yt) = _splits(seed=70)

    def to_ml(labels: np.ndarray) -> np.ndarray:  # overlapping labels plus one that is never positive
        return np.stack([labels == 0, labels == 1, labels >= 1, np.zeros_like(labels)], axis=1).astype(int)

    Y, Yv = to_ml(y), to_ml(yv)
    probe = _probe(name).fit(X, Y, eval_set=(Xv, Yv))
    proba = probe.predict_proba(Xt)
    assert probe.task_ == "multilabel" and proba.shape == (200, 4) and np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba[:, 3], 0, atol=1e-9)  # a label never positive in train
    np.testing.assert_array_equal(probe.predict(Xt), (proba > 0.5).astype(int))
    assert roc_auc(to_ml(yt), proba) > 0.75
    assert probe.val_score_ == pytest.approx(roc_auc(Yv, probe.predict_proba(Xv)))


def test_float16_input_and_explicit_task_and_classes() -> None:
    (X, y), (Xv, yv), (Xt, _) = _splits(seed=80, c=4)
    p16 = LogisticProbe().fit(X.astype(np.float16), y, eval_set=(Xv.astype(np.float16), yv))
    p32 = LogisticProbe().fit(
        X.astype(np.float16).astype(np.float32), y, eval_set=(Xv.astype(np.float16).astype(np.float32), yv)
    )
    np.testing.assert_allclose(p16.predict_proba(Xt.astype(np.float16)), p32.predict_proba(Xt), atol=1e-3)
    ordinal = KNNProbe(task="ordinal").fit(X, y, eval_set=(Xv, yv))
    assert ordinal.val_score_ == pytest.approx(quadratic_kappa(yv, ordinal.predict_proba(Xv)))
    by_acc = KNNProbe(selection_metric="accuracy").fit(X, y, eval_set=(Xv, yv))
    assert by_acc.val_score_ == pytest.approx(get_metric("accuracy")(yv, by_acc.predict_proba(Xv)))
    # a class missing from the training set still gets its (empty) column when classes are given
    keep = y != 2
    for name in ("logreg", "knn", "lgbm"):
        probe = _probe(name, classes=[0, 1, 2, 3]).fit(X[keep], y[keep], eval_set=(Xv, yv))
        proba = probe.predict_proba(Xt)
        assert proba.shape == (200, 4) and np.all(proba[:, 2] == 0), name
        np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-9)


def test_clear_errors() -> None:
    (X, y), (Xv, yv), _ = _splits()
    with pytest.raises(ProbeFitError, match="one class"):
        KNNProbe().fit(X, np.zeros_like(y))
    with pytest.raises(ProbeFitError, match=r"labels \[7\].*classes=\["):
        KNNProbe().fit(X, y, eval_set=(Xv, np.where(yv == 0, 7, yv)))
    with pytest.raises(ProbeFitError, match="cannot be computed on the validation labels"):
        LogisticProbe(selection_metric="roc_auc").fit(X, y, eval_set=(Xv, np.zeros_like(yv)))
    with pytest.raises(ProbeFitError, match="task='binary'"):
        LogisticProbe(task="binary").fit(X, y)

"""kNN probe: the prefix-sum sweep equals scikit-learn for every k and vote, k capping, blocking."""

from __future__ import annotations

import numpy as np
import pytest
from _probe_data import toy_splits
from sklearn.neighbors import KNeighborsClassifier

from fmprobe.metrics import balanced_accuracy
from fmprobe.probes import KNNProbe
from fmprobe.probes.knn import DEFAULT_KS, prefix_votes, topk


def test_knn_sweep_equals_sklearn_for_every_k_and_vote() -> None:
    (X, y), (Xv, yv), _ = toy_splits(seed=10)
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
    (X, y), (Xv, yv), (Xt, _) = toy_splits()
    small = KNNProbe().fit(X[:30], y[:30], eval_set=(Xv, yv))
    assert max(r["k"] for r in small.search_results_) == 30
    a = KNNProbe(block_size=7).fit(X, y, eval_set=(Xv, yv))
    b = KNNProbe(block_size=4096).fit(X, y, eval_set=(Xv, yv))
    assert a.search_results_ == b.search_results_
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))


def test_validation_labels_do_drive_the_choice() -> None:
    """Sanity for the guard above: the same probe picks differently when validation labels change."""
    (X, y), (Xv, yv), _ = toy_splits(seed=40)
    honest = KNNProbe().fit(X, y, eval_set=(Xv, yv)).best_params_
    shuffled = [KNNProbe().fit(X, y, eval_set=(Xv, np.roll(yv, s))).best_params_ for s in (1, 2, 3)]
    assert any(p != honest for p in shuffled)

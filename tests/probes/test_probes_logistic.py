"""Logistic probe: the warm-started C path equals a fresh fit at the chosen C."""

from __future__ import annotations

import numpy as np
from _probe_data import toy_splits
from sklearn.linear_model import LogisticRegression

from fmprobe.probes import LogisticProbe
from fmprobe.probes.logistic import DEFAULT_CS


def test_logistic_c_path_matches_fresh_fit_at_chosen_c() -> None:
    (X, y), (Xv, yv), (Xt, _) = toy_splits(seed=20, d=32)
    probe = LogisticProbe(tol=1e-7).fit(X, y, eval_set=(Xv, yv))
    C = probe.best_params_["C"]
    assert 1e-4 < C < 1e4 and len(probe.search_results_) == len(DEFAULT_CS)
    mean, std = X.mean(axis=0), X.std(axis=0)
    fresh = LogisticRegression(C=C, tol=1e-7, max_iter=5000).fit((X - mean) / std, y)
    np.testing.assert_allclose(
        probe.predict_proba(Xt), fresh.predict_proba((Xt - mean) / std), atol=1e-3
    )  # float32 solver precision
    np.testing.assert_allclose(probe.coef_, fresh.coef_, atol=5e-3 * np.abs(fresh.coef_).max())
    # the sweep was warm-started: later C values start from the previous optimum
    assert sum(r["n_iter"] for r in probe.search_results_) < len(DEFAULT_CS) * max(
        r["n_iter"] for r in probe.search_results_
    )

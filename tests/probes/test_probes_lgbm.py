"""LightGBM probe: the seed matters, early stopping uses validation, PCA."""

from __future__ import annotations

import numpy as np
import pytest
from _probe_data import FAST_LGBM, toy_splits

from fmprobe.probes import LGBMProbe


def test_lgbm_seed_matters_and_early_stopping_uses_validation() -> None:
    (X, y), (Xv, yv), (Xt, _) = toy_splits(seed=60)
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

"""LightGBM's fast default: the PCA size is a hyper-parameter chosen on validation (fewest components win ties), a
size that would not reduce means the raw features, and n_jobs="auto" keeps small boosters on one thread."""

from __future__ import annotations

import numpy as np
from _probe_data import FAST_LGBM, blobs

from fmprobe.probes import LGBMProbe
from fmprobe.probes.lgbm import DEFAULT_PCA, THREADS_FROM


def test_pca_size_is_chosen_on_validation_and_used_for_predictions() -> None:
    (X, y), (Xv, yv), (Xt, _) = (blobs(s, n, d=80, c=3, sep=0.4) for s, n in ((1, 300), (2, 150), (3, 100)))
    probe = LGBMProbe(**FAST_LGBM, pca_components=(16, 4)).fit(X, y, eval_set=(Xv, yv))
    rows = probe.search_results_
    assert [r["pca_components"] for r in rows] == [4, 16]  # fewest first, whatever order they were given in
    scores = [r["score"] for r in rows]
    chosen = rows[int(np.argmax(scores))]["pca_components"]
    assert probe.best_params_["pca_components"] == chosen == probe.pca_.n_components_
    assert probe.val_score_ == max(scores)
    assert probe.predict_proba(Xt).shape == (100, 3)
    alone = LGBMProbe(**FAST_LGBM, pca_components=chosen).fit(X, y, eval_set=(Xv, yv))
    np.testing.assert_array_equal(alone.predict_proba(Xt), probe.predict_proba(Xt))


def test_sizes_at_or_above_the_width_mean_the_raw_features() -> None:
    (X, y), (Xv, yv) = blobs(4, 200, d=16), blobs(5, 100, d=16)
    probe = LGBMProbe(**FAST_LGBM).fit(X, y, eval_set=(Xv, yv))
    assert min(DEFAULT_PCA) >= 16 and probe.pca_ is None
    assert [r["pca_components"] for r in probe.search_results_] == [None]


def test_auto_threads_keep_small_boosters_on_one_thread() -> None:
    probe = LGBMProbe()
    assert probe._threads((546, 256)) == 1  # BreastMNIST-sized: 312 s with all cores, 19 s with one
    assert probe._threads((THREADS_FROM, 1)) >= 1 and LGBMProbe(n_jobs=2)._threads((10, 10)) == 2

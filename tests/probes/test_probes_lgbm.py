"""LightGBM probe: rounds early-stopped on a slice of train (never on validation), one look at validation, the seed
matters, PCA, and a booster that made no split is refused."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import shared_file
from _probe_data import FAST_LGBM, toy_splits

from fmprobe.metrics import roc_auc
from fmprobe.probes import LGBMProbe, ProbeCannotFit, ProbeError
from fmprobe.probes.lgbm import STOPPED_ON_SLICE, stopping_slice


def test_lgbm_seed_matters_and_rounds_are_the_first_best_on_the_stopping_slice() -> None:
    (X, y), (Xv, yv), (Xt, _) = toy_splits(seed=60)
    a = LGBMProbe(**FAST_LGBM, random_state=1).fit(X, y, eval_set=(Xv, yv))
    b = LGBMProbe(**FAST_LGBM, random_state=2).fit(X, y, eval_set=(Xv, yv))
    assert not np.array_equal(a.predict_proba(Xt), b.predict_proba(Xt))
    (history,) = a.stopping_history_
    best = a.best_params_["n_estimators"]
    assert a.best_params_["early_stopping"] == STOPPED_ON_SLICE
    assert history[best - 1] == max(history) and history.index(max(history)) == best - 1  # first best round
    no_val = LGBMProbe(**FAST_LGBM, random_state=1).fit(X, y)  # validation scores the model, it does not shape it
    assert no_val.best_params_ == a.best_params_ and no_val.val_score_ is None and no_val.search_results_ == []
    np.testing.assert_array_equal(no_val.predict_proba(Xt), a.predict_proba(Xt))
    pca = LGBMProbe(**FAST_LGBM, pca_components=4).fit(X, y, eval_set=(Xv, yv))
    assert pca.pca_.n_components_ == 4 and pca.predict_proba(Xt).shape == (200, 3)


@pytest.mark.parametrize("multilabel", [False, True], ids=["multiclass", "multilabel"])
def test_validation_labels_cannot_change_the_rounds(multilabel: bool) -> None:
    """Was: the rounds were early-stopped on validation, so the validation labels chose them."""
    (X, y), (Xv, yv), (Xt, _) = toy_splits(seed=61)
    if multilabel:
        y, yv = (np.stack([lab == 0, lab >= 1], axis=1).astype(int) for lab in (y, yv))
    params = {**FAST_LGBM, "n_estimators": 200}
    probe = LGBMProbe(**params).fit(X, y, eval_set=(Xv, yv))
    shuffled = LGBMProbe(**params).fit(X, y, eval_set=(Xv, np.random.default_rng(0).permutation(yv)))
    assert probe.best_params_ == shuffled.best_params_
    np.testing.assert_array_equal(probe.predict_proba(Xt), shuffled.predict_proba(Xt))
    assert probe.val_score_ != shuffled.val_score_  # the labels were used: once, to score the model


def test_validation_score_is_one_look_at_the_final_model() -> None:
    """Was: the validation score was the maximum over every round's score on validation."""
    (X, y), (Xv, yv), _ = toy_splits(seed=62, c=2)
    probe = LGBMProbe(**FAST_LGBM).fit(X, y, eval_set=(Xv, yv))
    assert probe.val_score_ == pytest.approx(roc_auc(yv, probe.predict_proba(Xv)), abs=1e-12)
    assert [r["score"] for r in probe.search_results_] == [probe.val_score_]  # one candidate, one score


def test_stopping_slice_is_seeded_stratified_and_leaves_every_class_to_fit_on() -> None:
    y = np.repeat([0, 1, 2], [50, 10, 2])
    fit, stop = stopping_slice(y, 0.2, seed=3)
    assert np.bincount(y[stop]).tolist() == [10, 2, 1] and np.bincount(y[fit]).tolist() == [40, 8, 1]
    assert sorted([*fit, *stop]) == list(range(len(y)))
    np.testing.assert_array_equal(stopping_slice(y, 0.2, seed=3)[1], stop)
    assert not np.array_equal(stopping_slice(y, 0.2, seed=4)[1], stop)
    assert "too few" in stopping_slice(np.array([0, 0, 0, 1]), 0.2, seed=0)


def test_too_few_rows_for_a_slice_train_fixed_rounds_and_say_so() -> None:
    (X, y), (Xv, yv), _ = toy_splits(seed=63, c=2)
    y = y.copy()
    y[np.flatnonzero(y == 1)[1:]] = 0  # one positive training row: no stratified slice can hold it back
    probe = LGBMProbe(**FAST_LGBM, min_child_samples=2).fit(X, y, eval_set=(Xv, yv))
    assert "fixed rounds" in probe.best_params_["early_stopping"]
    assert probe.best_params_ == LGBMProbe(**FAST_LGBM, min_child_samples=2).fit(X, y).best_params_


@pytest.mark.parametrize("multilabel", [False, True], ids=["binary", "multilabel"])
def test_a_booster_without_a_split_cannot_fit(multilabel: bool) -> None:
    """Was: 5 training images with min_child_samples=10 made no split and were scored as AUC 0.500."""
    (X, y), (Xv, yv), _ = toy_splits(seed=64, c=2)
    rows = np.concatenate([np.flatnonzero(y == 0)[:4], np.flatnonzero(y == 1)[:1]])  # BreastMNIST at fraction 0.01
    X5, y5 = X[rows], y[rows]
    if multilabel:
        y5, yv = np.stack([y5, 1 - y5], axis=1), np.stack([yv, 1 - yv], axis=1)
    with pytest.raises(ProbeCannotFit, match=r"no split.*min_child_samples=10.*Lower min_child_samples") as err:
        LGBMProbe(**FAST_LGBM).fit(X5, y5, eval_set=(Xv, yv))
    assert isinstance(err.value, ProbeError)
    assert LGBMProbe(**FAST_LGBM, min_child_samples=2).fit(X5, y5, eval_set=(Xv, yv)).val_score_ is not None


def test_breastmnist_validation_cannot_choose_the_rounds() -> None:
    """On the real BreastMNIST (seeded random projection of the pixels): the rounds and the test predictions do
    not depend on the validation labels."""
    data = np.load(shared_file("breastmnist.npz"))
    W = np.random.default_rng(0).normal(size=(28 * 28, 32)) / 28
    X, Xv, Xt = (
        (data[f"{s}_images"].reshape(-1, 28 * 28) / 255.0 @ W).astype(np.float32) for s in ("train", "val", "test")
    )
    y, yv = data["train_labels"].ravel(), data["val_labels"].ravel()
    probe = LGBMProbe(n_jobs=1).fit(X, y, eval_set=(Xv, yv))
    flipped = LGBMProbe(n_jobs=1).fit(X, y, eval_set=(Xv, 1 - yv))
    assert probe.best_params_ == flipped.best_params_
    np.testing.assert_array_equal(probe.predict_proba(Xt), flipped.predict_proba(Xt))
    assert probe.val_score_ == pytest.approx(1 - flipped.val_score_)

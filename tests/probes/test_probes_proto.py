"""The prototype probe (SimpleShot): CL2N prototypes, nearest-prototype predictions, temperature on validation."""

from __future__ import annotations

import numpy as np
import pytest
from _probe_data import toy_splits
from sklearn.neighbors import NearestCentroid
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

from fmprobe.probes import ProbeParameterError, ProtoProbe, is_stochastic, make_probe
from fmprobe.probes.proto import cl2n


@parametrize_with_checks([ProtoProbe()])
def test_sklearn_estimator_contract(estimator, check) -> None:
    check(estimator)


def test_every_parameter_has_a_declared_constraint() -> None:
    check_param_validation("ProtoProbe", ProtoProbe())
    with pytest.raises(ProbeParameterError, match="'temperature' parameter of ProtoProbe"):
        make_probe("proto", temperature=0)


def test_hand_computed_prototypes_and_prediction() -> None:
    X = np.array([[3.0, 1.0], [1.0, 1.0], [1.0, 3.0], [3.0, 3.0]])  # training mean (2, 2)
    y = np.array([0, 0, 1, 1])
    probe = ProtoProbe(temperature=1.0).fit(X, y)
    np.testing.assert_allclose(probe.mean_, [2.0, 2.0])
    # centred: (1,-1), (-1,-1), (-1,1), (1,1); normalised: each / sqrt(2)
    r = 1 / np.sqrt(2)
    np.testing.assert_allclose(probe.prototypes_, [[0.0, -r], [0.0, r]], atol=1e-12)
    # (2, 0) centres to (0, -2) -> (0, -1): distances 1 - r to class 0, 1 + r to class 1
    proba = probe.predict_proba(np.array([[2.0, 0.0]]))
    d0, d1 = 1 - r, 1 + r
    expected = np.exp(-d0) / (np.exp(-d0) + np.exp(-d1))
    np.testing.assert_allclose(proba, [[expected, 1 - expected]], atol=1e-12)
    assert probe.predict(np.array([[2.0, 0.0], [2.5, 9.0]])).tolist() == [0, 1]
    assert not is_stochastic("proto") and probe.best_params_ == {"temperature": 1.0}


def test_agrees_with_sklearn_nearest_centroid_after_cl2n() -> None:
    (X, y), _, (Xt, _) = toy_splits(seed=3, c=4)
    probe = ProtoProbe().fit(X, y)
    mean = X.mean(axis=0, dtype=np.float64)
    reference = NearestCentroid().fit(cl2n(X, mean), y)
    np.testing.assert_array_equal(probe.predict(Xt), reference.predict(cl2n(Xt, mean)))
    np.testing.assert_allclose(probe.prototypes_, reference.centroids_, atol=1e-12)


def test_temperature_is_chosen_on_validation_and_absent_classes_get_a_zero_column() -> None:
    (X, y), (Xv, yv), (Xt, _) = toy_splits(seed=1, c=3)
    probe = ProtoProbe().fit(X, y, eval_set=(Xv, yv))
    temps = [r["temperature"] for r in probe.search_results_]
    assert temps == sorted(temps, reverse=True) and probe.temperature_ in temps
    assert probe.val_score_ == max(r["score"] for r in probe.search_results_)
    keep = y != 2
    partial = ProtoProbe(classes=[0, 1, 2]).fit(X[keep], y[keep])
    proba = partial.predict_proba(Xt)
    assert proba.shape == (len(Xt), 3) and np.all(proba[:, 2] == 0) and np.allclose(proba.sum(axis=1), 1)


def test_multilabel_uses_a_positive_and_a_negative_prototype_per_label() -> None:
    rng = np.random.default_rng(0)
    Y = rng.integers(0, 2, size=(200, 3))
    X = Y @ np.eye(3, 8) * 2.0 + rng.normal(size=(200, 8))
    Y_missing = Y.copy()
    Y_missing[:40, 1] = -1  # unknown entries are left out of label 1's prototypes
    Y_missing[:, 2] = np.where(Y[:, 2] == 1, -1, 0)  # label 2: no known positive -> its prior (0.0)
    probe = ProtoProbe(task="multilabel").fit(X, Y_missing)
    proba = probe.predict_proba(X)
    assert proba.shape == (200, 3) and np.all(proba[:, 2] == 0.0)
    for j in (0, 1):
        assert np.mean((proba[:, j] > 0.5) == (Y[:, j] == 1)) > 0.8
    Z = cl2n(X, X.mean(axis=0))
    known = Y_missing[:, 1] == 1
    np.testing.assert_allclose(probe.prototypes_[1, 1], Z[known].mean(axis=0), atol=1e-12)


def test_row_blocks_give_the_same_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import fmprobe.probes.proto as proto

    (X, y), (Xv, yv), (Xt, _) = toy_splits(seed=2, c=3)
    whole = ProtoProbe().fit(X, y, eval_set=(Xv, yv))
    monkeypatch.setattr(proto, "ROW_BLOCK", 7)  # many blocks, the last one partial
    blocked = ProtoProbe().fit(X, y, eval_set=(Xv, yv))
    np.testing.assert_allclose(blocked.prototypes_, whole.prototypes_, atol=1e-12)
    np.testing.assert_allclose(blocked.predict_proba(Xt), whole.predict_proba(Xt), atol=1e-12)

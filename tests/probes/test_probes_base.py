"""What every probe shares: the scikit-learn contract, declared parameter constraints, the registry,
validation-only selection, targets and errors."""

from __future__ import annotations

import numpy as np
import pytest
from _probe_data import assert_test_labels_cannot_change_choices, fast_probe, toy_splits
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_param_validation, parametrize_with_checks

from fmprobe.errors import ProbeError, UnknownNameError
from fmprobe.metrics import balanced_accuracy, get_metric, quadratic_kappa, roc_auc
from fmprobe.probes import (
    PROBES,
    KNNProbe,
    LGBMProbe,
    LogisticProbe,
    ProbeFitError,
    ProbeParameterError,
    ProtoProbe,
    is_stochastic,
    make_probe,
)


@parametrize_with_checks([LogisticProbe(), KNNProbe(), LGBMProbe(min_child_samples=2)])  # lgbm: default rounds, threads, PCA
def test_sklearn_estimator_contract(estimator, check) -> None:
    check(estimator)


@pytest.mark.parametrize("probe", [LogisticProbe(), KNNProbe(), LGBMProbe(n_estimators=5, n_jobs=1)], ids=repr)
def test_every_parameter_has_a_declared_constraint(probe) -> None:
    """scikit-learn's own check: constraints cover exactly the parameters, and a bad type names the parameter."""
    check_param_validation(type(probe).__name__, probe)


@pytest.mark.parametrize(
    ("probe", "param"),
    [
        (KNNProbe(ks=(0, 1, 5)), "ks"),  # was: a "k=0" candidate scored as k=5
        (KNNProbe(ks=()), "ks"),
        (KNNProbe(k=0), "k"),  # was: an error inside numpy
        (KNNProbe(temperature=0), "temperature"),  # was: fitted with divide-by-zero warnings
        (KNNProbe(votings=("majority", "mean")), "votings"),
        (KNNProbe(voting="mean"), "voting"),
        (LogisticProbe(C=-1.0), "C"),  # was: an error in LogisticRegression's name
        (LogisticProbe(Cs=[1.0, 0.0]), "Cs"),
        (LogisticProbe(max_iter=0), "max_iter"),
        (LGBMProbe(subsample=0.0), "subsample"),
        (LGBMProbe(num_leaves=1), "num_leaves"),
        (LGBMProbe(learning_rate=-0.1), "learning_rate"),
        (LogisticProbe(task="regression"), "task"),
    ],
    ids=lambda v: v if isinstance(v, str) else type(v).__name__,
)
def test_bad_parameters_fail_at_fit_naming_probe_and_parameter(probe, param: str) -> None:
    (X, y), (Xv, yv), _ = toy_splits()
    match = rf"The '{param}' parameter of {type(probe).__name__} must be"
    with pytest.raises(ProbeParameterError, match=match) as err:
        probe.fit(X, y, eval_set=(Xv, yv))
    assert isinstance(err.value, InvalidParameterError) and isinstance(err.value, ProbeError)
    name = {"KNNProbe": "knn", "LogisticProbe": "logreg", "LGBMProbe": "lgbm"}[type(probe).__name__]
    with pytest.raises(ProbeParameterError, match=match):  # and before any data is seen, when built by name
        make_probe(name, **{param: probe.get_params()[param]})


def test_unknown_selection_metric_fails_when_the_probe_is_built() -> None:
    with pytest.raises(UnknownNameError, match="Closest: roc_auc"):
        make_probe("knn", selection_metric="roc_acu")


def test_stochastic_means_having_a_random_state() -> None:
    assert [name for name in PROBES if is_stochastic(name)] == ["lgbm"]
    assert is_stochastic(LGBMProbe) and is_stochastic(LGBMProbe()) and not is_stochastic(LogisticProbe())


def test_registry_and_make_probe() -> None:
    assert {name: PROBES.get(name) for name in PROBES} == {
        "logreg": LogisticProbe, "knn": KNNProbe, "lgbm": LGBMProbe, "proto": ProtoProbe,
    }  # fmt: skip
    assert isinstance(make_probe("knn", k=5), KNNProbe) and make_probe("knn", k=5).k == 5
    with pytest.raises(UnknownNameError, match="Closest: logreg"):
        make_probe("logres")
    with pytest.raises(ProbeError, match="no parameter.*Cz.*valid: C, Cs"):
        make_probe("logreg", Cz=[1.0])


def test_wrong_feature_count_names_the_expected_number() -> None:
    (X, y), _, _ = toy_splits()
    probe = LogisticProbe().fit(X, y)
    with pytest.raises(ValueError, match="is expecting 16 features"):
        probe.predict(X[:, :10])


@pytest.mark.parametrize("name", ["logreg", "knn", "lgbm"])
def test_leakage_guard_test_labels_cannot_change_choices(name: str) -> None:
    (X, y), (Xv, yv), (Xt, yt) = toy_splits(seed=30)
    assert_test_labels_cannot_change_choices(name, (X, y), (Xv, yv), Xt, yt, balanced_accuracy)
    # the reported validation score is the selection metric of the chosen model on the validation set
    chosen = fast_probe(name).fit(X, y, eval_set=(Xv, yv))
    assert chosen.val_score_ == pytest.approx(balanced_accuracy(yv, chosen.predict_proba(Xv)), abs=1e-12)


@pytest.mark.parametrize("name", ["logreg", "knn", "lgbm"])
def test_deterministic(name: str) -> None:
    (X, y), (Xv, yv), (Xt, _) = toy_splits(seed=50)
    a = fast_probe(name).fit(X, y, eval_set=(Xv, yv))
    b = fast_probe(name).fit(X, y, eval_set=(Xv, yv))
    assert a.best_params_ == b.best_params_ and a.search_results_ == b.search_results_
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))


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
    (X, y), _, _ = toy_splits()
    for probe, params in (
        (LogisticProbe(C=0.5), {"C": 0.5}),
        (KNNProbe(k=7, voting="majority"), {"k": 7, "voting": "majority"}),
    ):
        probe.fit(X, y)
        assert probe.best_params_ == params and probe.val_score_ is None and probe.search_results_ == []


@pytest.mark.parametrize("name", ["logreg", "knn", "lgbm"])
def test_multilabel(name: str) -> None:
    (X, y), (Xv, yv), (Xt, yt) = toy_splits(seed=70)

    def to_ml(labels: np.ndarray) -> np.ndarray:  # overlapping labels plus one that is never positive
        return np.stack([labels == 0, labels == 1, labels >= 1, np.zeros_like(labels)], axis=1).astype(int)

    Y, Yv = to_ml(y), to_ml(yv)
    probe = fast_probe(name).fit(X, Y, eval_set=(Xv, Yv))
    proba = probe.predict_proba(Xt)
    assert probe.task_ == "multilabel" and proba.shape == (200, 4) and np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba[:, 3], 0, atol=1e-9)  # a label never positive in train
    np.testing.assert_array_equal(probe.predict(Xt), (proba > 0.5).astype(int))
    assert roc_auc(to_ml(yt), proba) > 0.75
    assert probe.val_score_ == pytest.approx(roc_auc(Yv, probe.predict_proba(Xv)))


def test_float16_input_and_explicit_task_and_classes() -> None:
    (X, y), (Xv, yv), (Xt, _) = toy_splits(seed=80, c=4)
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
        probe = fast_probe(name, classes=[0, 1, 2, 3]).fit(X[keep], y[keep], eval_set=(Xv, yv))
        proba = probe.predict_proba(Xt)
        assert proba.shape == (200, 4) and np.all(proba[:, 2] == 0), name
        np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-9)


def test_clear_errors() -> None:
    (X, y), (Xv, yv), _ = toy_splits()
    with pytest.raises(ProbeFitError, match="one class"):
        KNNProbe().fit(X, np.zeros_like(y))
    with pytest.raises(ProbeFitError, match=r"labels \[7\].*classes=\["):
        KNNProbe().fit(X, y, eval_set=(Xv, np.where(yv == 0, 7, yv)))
    with pytest.raises(ProbeFitError, match="cannot be computed on the validation labels"):
        LogisticProbe(selection_metric="roc_auc").fit(X, y, eval_set=(Xv, np.zeros_like(yv)))
    with pytest.raises(ProbeFitError, match="task='binary'"):
        LogisticProbe(task="binary").fit(X, y)

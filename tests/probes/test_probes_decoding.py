"""Ordinal decoding: argmax, rounded expected grade, cut-points fitted on validation only (cross-fitted for the choice)."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import shared_file
from _probe_data import fast_probe

from fmprobe.metrics import Prepared, get_metric
from fmprobe.probes import PROBES, LogisticProbe, ProbeFitError, ProbeParameterError, make_probe
from fmprobe.probes.decoding import cross_fitted, cut, decode, expected_grade, fit_cuts, halves, initial_cuts

KAPPA = get_metric("quadratic_kappa")


def kappa(y: np.ndarray, proba: np.ndarray, pred: np.ndarray) -> float:
    return KAPPA.evaluate(Prepared(y, proba, pred))


def test_the_three_decodings_on_known_probabilities() -> None:
    proba = np.array([[0.4, 0.0, 0.3, 0.3], [0.0, 0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.0, 0.0]])
    assert decode(proba, "argmax").tolist() == [0, 1, 3, 0]
    assert expected_grade(proba).tolist() == [1.5, 2.0, 3.0, 0.5]
    assert decode(proba, "expected").tolist() == [2, 2, 3, 1]  # rounded half up, within 0..K-1
    assert decode(proba, "thresholds", np.array([0.4, 1.6, 2.9])).tolist() == [1, 2, 3, 1]
    assert cut(np.array([0.5, 1.7]), np.array([2.9, 0.4, 1.6])).tolist() == [1, 2]  # cut-points are kept sorted
    with pytest.raises(ValueError, match="cut-points fitted on validation"):
        decode(proba, "thresholds")


def test_fitted_cut_points_are_monotone_and_beat_rounding_where_the_grades_are_shifted() -> None:
    rng = np.random.default_rng(0)
    grade = rng.uniform(0, 4, 400)
    y = cut(grade + rng.normal(0, 0.2, 400), np.array([1.2, 2.2, 2.6, 3.4]))  # true cut-points away from k - 0.5
    rows = np.arange(400)
    one_hot = np.eye(5)[y]

    def score(r: np.ndarray, pred: np.ndarray) -> float:
        return kappa(y[r], one_hot[r], pred)

    cuts = fit_cuts(grade, rows, score, 5)
    assert np.all(np.diff(cuts) >= 0)
    assert score(rows, cut(grade, cuts)) > score(rows, cut(grade, initial_cuts(5))) + 0.02
    a, b = halves(y)
    assert len(np.intersect1d(a, b)) == 0 and len(a) + len(b) == 400 and abs(len(a) - len(b)) <= 5
    out_of_fold = cross_fitted(grade, y, score, 5)
    assert score(rows, out_of_fold) <= score(rows, cut(grade, cuts))  # fitting on the scored rows flatters


def retina(dim: int = 64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The real RetinaMNIST through deterministic features (2x2-pooled pixels, seeded random projection)."""
    data = np.load(shared_file("retinamnist.npz"))
    projection = np.random.default_rng(0).normal(size=(14 * 14 * 3, dim)).astype(np.float32)
    out = {}
    for split in ("train", "val", "test"):
        x = data[f"{split}_images"].astype(np.float32) / 255
        x = x.reshape(len(x), 14, 2, 14, 2, 3).mean(axis=(2, 4)).reshape(len(x), -1)
        out[split] = (x @ projection, data[f"{split}_labels"][:, 0].astype(np.int64))
    return out


@pytest.mark.parametrize("name", ["logreg", "knn"])
def test_on_real_retinamnist_the_decoding_is_chosen_on_validation(name: str) -> None:
    splits = retina()
    (X, y), val, (X_test, y_test) = splits["train"], splits["val"], splits["test"]
    probe = fast_probe(name, task="ordinal", classes=np.arange(5)).fit(X, y, eval_set=val)
    scores = probe.decoding_scores_
    assert set(scores) == {"argmax", "expected", "thresholds"} and len({round(s, 6) for s in scores.values()}) == 3
    assert probe.best_params_["decoding"] == max(scores, key=scores.get) and probe.val_score_ == max(scores.values())
    proba_val = probe.predict_proba(val[0])
    honest = cross_fitted(expected_grade(proba_val), val[1], lambda r, p: kappa(val[1][r], proba_val[r], p), 5)
    assert scores["thresholds"] == kappa(val[1], proba_val, honest)  # the candidate is scored out of fold
    proba = probe.predict_proba(X_test)
    on_test = {d: kappa(y_test, proba, decode(proba, d, probe.cuts_)) for d in ("argmax", "expected")}
    assert abs(on_test["expected"] - on_test["argmax"]) > 0.02  # logreg: 0.508 vs 0.481; knn: 0.469 vs 0.235
    chosen = probe.best_params_["decoding"]
    assert np.array_equal(probe.predict(X_test), decode(proba, chosen, probe.cuts_))
    if chosen == "thresholds":
        assert probe.best_params_["cuts"] == probe.cuts_.tolist() and np.all(np.diff(probe.cuts_) >= 0)


def test_a_fixed_decoding_is_used_and_recorded() -> None:
    splits = retina()
    for decoding in ("argmax", "expected"):
        probe = make_probe("logreg", task="ordinal", decoding=decoding).fit(*splits["train"], eval_set=splits["val"])
        proba = probe.predict_proba(splits["test"][0])
        assert probe.best_params_["decoding"] == decoding and set(probe.decoding_scores_) == {decoding}
        assert np.array_equal(probe.predict(splits["test"][0]), decode(proba, decoding))


def test_decoding_is_refused_outside_ordinal_tasks_and_thresholds_need_validation() -> None:
    for task in ("auto", "binary", "multiclass", "multilabel"):
        with pytest.raises(ProbeParameterError, match="The 'decoding' parameter of KNNProbe is 'expected'"):
            make_probe("knn", task=task, decoding="expected")
    with pytest.raises(ProbeParameterError, match="'decoding' parameter"):
        make_probe("logreg", task="ordinal", decoding="median")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 4)), np.arange(60) % 3
    with pytest.raises(ProbeFitError, match="decoding='thresholds' fits its cut-points on validation"):
        make_probe("logreg", task="ordinal", decoding="thresholds").fit(X, y)
    plain = make_probe("logreg", task="multiclass").fit(X, y, eval_set=(X, y))
    assert "decoding" not in plain.best_params_  # other tasks' params are as before
    assert np.array_equal(plain.predict(X), plain.predict_proba(X).argmax(axis=1))


def test_every_probe_takes_the_parameter() -> None:
    with pytest.raises(TypeError, match="must take the shared probe parameter"):

        class Later(LogisticProbe):  # a probe that forgets a shared parameter is refused when it is defined
            def __init__(self, *, C: float = 1.0, task: str = "auto") -> None:
                super().__init__(C=C, task=task)

    for cls in [PROBES.get(name) for name in PROBES]:
        probe = cls(decoding="argmax")
        assert probe.get_params()["decoding"] == "argmax" and cls().decoding == "auto"
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(90, 4)) + (np.arange(90) % 3)[:, None], np.arange(90) % 3
    lgbm = fast_probe("lgbm", task="ordinal").fit(X, y, eval_set=(X, y))
    assert lgbm.best_params_["decoding"] in ("argmax", "expected", "thresholds")

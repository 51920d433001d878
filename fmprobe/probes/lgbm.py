"""Gradient-boosted trees (LightGBM) on embeddings, early-stopped on the validation set.

The number of boosting rounds is the hyper-parameter chosen on validation: LightGBM evaluates the
selection metric (from :mod:`fmprobe.metrics`, so the same definition as everywhere else) after every
round and keeps the first round of the best score; the booster is trained on the training set only.
Defaults suit dense embeddings: half the features per tree, small trees, shrinkage 0.05.
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.decomposition import PCA
from sklearn.utils._param_validation import Interval

from fmprobe.metrics import MetricUndefined, Prepared
from fmprobe.probes.base import PROBES, ProbeBase, expand_columns
from fmprobe.tasks import MISSING

_AT_LEAST_ONE = Interval(Integral, 1, None, closed="left")
_FRACTION = Interval(Real, 0, 1, closed="right")


def _known_rows(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of one output whose label is known (all of them for single-label codes)."""
    known = y != MISSING
    return (X, y) if known.all() else (X[known], y[known])


@PROBES.register("lgbm")
class LGBMProbe(ProbeBase):
    """LightGBM probe: one multiclass booster, or one binary booster per label for multilabel targets.

    A multilabel label with missing entries (-1) gets a booster trained, and early-stopped, on the rows
    where it is known (in train and in validation respectively).

    Parameters
    ----------
    n_estimators : maximum boosting rounds (all of them are used without ``eval_set``).
    early_stopping_rounds : rounds without validation improvement before stopping.
    learning_rate, num_leaves, min_child_samples, colsample_bytree, subsample, reg_lambda : LightGBM's.
    pca_components : project on this many principal components (fitted on train) first; None = off.
    n_jobs : threads; -1 or None = all cores.
    random_state : seed of bagging, feature sampling and PCA (training is run with deterministic=True).
    task, selection_metric, classes : as for every probe (see :mod:`fmprobe.probes.base`).
    """

    _parameter_constraints = {
        **ProbeBase._parameter_constraints,
        "n_estimators": [_AT_LEAST_ONE],
        "early_stopping_rounds": [_AT_LEAST_ONE],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "num_leaves": [Interval(Integral, 2, None, closed="left")],
        "min_child_samples": [Interval(Integral, 0, None, closed="left")],
        "colsample_bytree": [_FRACTION],
        "subsample": [_FRACTION],
        "reg_lambda": [Interval(Real, 0, None, closed="left")],
        "pca_components": [_AT_LEAST_ONE, None],
        "n_jobs": [Integral, None],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        *,
        n_estimators: int = 1000,
        early_stopping_rounds: int = 50,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 10,
        colsample_bytree: float = 0.5,
        subsample: float = 0.8,
        reg_lambda: float = 1.0,
        pca_components: int | None = None,
        n_jobs: int | None = -1,
        random_state: int = 0,
        task: str = "auto",
        selection_metric: str | None = None,
        classes: Any = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.colsample_bytree = colsample_bytree
        self.subsample = subsample
        self.reg_lambda = reg_lambda
        self.pca_components = pca_components
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.task = task
        self.selection_metric = selection_metric
        self.classes = classes

    def _params(self, n_classes: int) -> dict[str, Any]:
        threads = (os.cpu_count() or 1) if self.n_jobs in (None, -1) else int(self.n_jobs)
        params = {
            "objective": "binary" if n_classes == 2 else "multiclass",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.colsample_bytree,
            "bagging_fraction": self.subsample,
            "bagging_freq": 1 if self.subsample < 1 else 0,
            "lambda_l2": self.reg_lambda,
            "num_threads": threads,
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
            "metric": "None",
        }
        if n_classes > 2:
            params["num_class"] = n_classes
        return params

    @staticmethod
    def _proba(preds: np.ndarray, present: np.ndarray, n_columns: int) -> np.ndarray:
        """Booster output (1-D positive probability or [N, P]) as [N, n_columns] over all classes."""
        p = np.stack([1.0 - preds, preds], axis=1) if preds.ndim == 1 else preds
        return expand_columns(p, present, n_columns)

    def _train_one(
        self, X: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None, n_columns: int
    ) -> dict[str, Any]:
        """Fit one booster on codes ``y`` (its present classes remapped to 0..P-1); returns its state.

        A multilabel column uses only its known rows (entries != -1), in train and in validation.
        """
        X, y = _known_rows(X, y)
        if val is not None:
            val = _known_rows(*val)
            if len(val[1]) == 0:  # this label is never known in validation: nothing to stop on
                val = None
        present = np.unique(y)
        state: dict[str, Any] = {"booster": None, "present": present, "rounds": 0, "history": [], "metric": None}
        if len(present) <= 1:  # a multilabel column constant (or never known) in train: predict that constant
            return state
        train = lgb.Dataset(X, label=np.searchsorted(present, y), free_raw_data=True)
        params = self._params(len(present))
        history: dict[str, Any] = {}
        kwargs = {} if val is None else self._early_stopping(train, val, present, n_columns, params, state, history)
        booster = lgb.train(params, train, num_boost_round=self.n_estimators, **kwargs)
        state["booster"] = booster
        state["rounds"] = int(booster.best_iteration or booster.current_iteration())
        state["history"] = [float(v) for v in next(iter(history.get("val", {}).values()), [])]
        return state

    def _early_stopping(
        self,
        train: lgb.Dataset,
        val: tuple[np.ndarray, np.ndarray],
        present: np.ndarray,
        n_columns: int,
        params: dict[str, Any],
        state: dict[str, Any],
        history: dict[str, Any],
    ) -> dict[str, Any]:
        """``lgb.train`` keywords that evaluate the selection metric on validation after every round and stop
        early; records the metric's name in ``state`` (binary log-loss, set in ``params``, where it is undefined)
        and its per-round values in ``history``."""
        X_val, y_val = val
        metric = self._selection_metric()
        kwargs: dict[str, Any] = {}
        try:  # the metric on this output's own labels, e.g. one label's AUC for a multilabel target
            metric.evaluate(Prepared(y_val, np.full((len(y_val), n_columns), 1.0 / n_columns)))
            state["metric"] = metric.name

            def feval(preds: np.ndarray, _data: lgb.Dataset) -> tuple[str, float, bool]:
                try:
                    return metric.name, metric.evaluate(Prepared(y_val, self._proba(preds, present, n_columns))), True
                except MetricUndefined:
                    return metric.name, -np.inf, True

            kwargs["feval"] = feval
        except MetricUndefined:  # only a multilabel column can get here (e.g. no positive in validation)
            params["metric"] = state["metric"] = "binary_logloss"
        return {
            **kwargs,
            "valid_sets": [lgb.Dataset(X_val, label=y_val, reference=train)],
            "valid_names": ["val"],
            "callbacks": [
                lgb.early_stopping(self.early_stopping_rounds, first_metric_only=True, verbose=False),
                lgb.record_evaluation(history),
            ],
        }

    def _fit(self, X: np.ndarray, Y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None, owned: bool) -> None:
        self.pca_ = None
        if self.pca_components is not None:
            self.pca_ = PCA(n_components=self.pca_components, random_state=self.random_state).fit(X)
            X = self.pca_.transform(X).astype(np.float32)
            if val is not None:
                val = (self.pca_.transform(val[0]).astype(np.float32), val[1])
        if self.task_ == "multilabel":
            self.models_ = [
                self._train_one(X, Y[:, j], None if val is None else (val[0], val[1][:, j]), 2)
                for j in range(Y.shape[1])
            ]
            self.best_params_ = {"n_estimators": [m["rounds"] for m in self.models_]}
            self.search_results_ = [
                {
                    "label": j,
                    "n_estimators": m["rounds"],
                    "metric": m["metric"],
                    "score": m["history"][m["rounds"] - 1] if m["history"] else None,
                }
                for j, m in enumerate(self.models_)
            ]
        else:
            self.models_ = [self._train_one(X, Y, val, len(self.classes_))]
            self.best_params_ = {"n_estimators": self.models_[0]["rounds"]}
            self.search_results_ = [
                {"n_estimators": i + 1, "score": s} for i, s in enumerate(self.models_[0]["history"])
            ]
        self.val_score_ = None if val is None else self._score(val[1], self._scores_projected(val[0]))

    def _predict_one(self, model: dict[str, Any], X: np.ndarray, n_columns: int) -> np.ndarray:
        if model["booster"] is None and len(model["present"]) == 0:  # label never known in train: no information
            return np.full((len(X), n_columns), 1.0 / n_columns)
        if model["booster"] is None:
            return np.tile(expand_columns(np.ones((1, 1)), model["present"], n_columns), (len(X), 1))
        return self._proba(model["booster"].predict(X, num_iteration=model["rounds"]), model["present"], n_columns)

    def _scores_projected(self, X: np.ndarray) -> np.ndarray:
        if self.task_ == "multilabel":
            return np.stack([self._predict_one(m, X, 2)[:, 1] for m in self.models_], axis=1)
        return self._predict_one(self.models_[0], X, len(self.classes_))

    def _predict_scores(self, X: np.ndarray) -> np.ndarray:
        if self.pca_ is not None:
            X = self.pca_.transform(X).astype(np.float32)
        return self._scores_projected(X)

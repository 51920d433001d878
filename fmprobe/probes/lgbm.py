"""Gradient-boosted trees (LightGBM) on embeddings, early-stopped on a slice of the training set.

The number of boosting rounds is tuned by early stopping on a seeded, stratified slice of the *training* rows
(``stopping_fraction`` of each class; the booster trains on the rest): LightGBM evaluates the selection metric
(from :mod:`fmprobe.metrics`, so the same definition as everywhere else) on that slice after every round and
keeps the first round of the best score. The validation set is looked at once, to score the finished model,
so that it ranks LightGBM against the other probes on the same footing as logreg's C or kNN's k: a maximum over
a thousand looks at validation would be an optimistic score and favour LightGBM in cross-probe selection.
Where the training rows are too few for a slice (a class with fewer than 2 rows) the booster trains all
``n_estimators`` rounds on every row, and ``best_params_["early_stopping"]`` says so.

A booster that made no split in any tree predicts a constant: :class:`~fmprobe.probes.ProbeCannotFit` is raised
(the cell is recorded as missing with that reason, never as a chance-level value).
Defaults suit dense embeddings: half the features per tree, small trees, shrinkage 0.05.

Fast default (as HEST-bench does): the features are first projected on their leading principal components, fitted
on the training rows, and the number of components is a hyper-parameter chosen on validation like logreg's C:
``pca_components=DEFAULT_PCA`` tries each listed size (fewest first, so a tie goes to the cheaper model), scores
each finished model once on validation and keeps the best. A size at or above the features' width (or the
training rows) means no projection. Boosting cost grows with the number of features, so 64 + 256 components cost
a fraction of one booster on 768-1280 raw dimensions; ``bench/lgbm_tradeoff.py`` measures time and test AUC on
real MedMNIST features for each setting. On EfficientNet-Lite0 features (1280 dims, shared 2-core AMD EPYC, one
thread): PneumoniaMNIST raw 65.7 s / test AUC 0.9355, PCA 256 26.2 s / 0.9349, PCA 64 9.0 s / 0.9358 (the default
grid: both, 35 s, chose 256 on validation); BreastMNIST (546 rows) raw 2.3 s / 0.819 (stopped after 12 rounds),
PCA 256 5.0 s / 0.753, PCA 64 2.0 s / 0.767: on 78 validation images the projection's higher validation AUC
(0.858 against 0.820) did not carry to test. ``pca_components=None`` boosts on the raw features.

Threads: ``n_jobs="auto"`` (the default) uses one thread below :data:`THREADS_FROM` training cells (rows x
features after the projection) and every core above. On a 2-core machine one BreastMNIST cell (546 rows) took
312 s with all cores and 19 s with one (identical rounds and scores): LightGBM's OpenMP threads spin between the
short steps of a small booster. ``bench/lgbm_tradeoff.py`` on a shared 2-core AMD EPYC: BreastMNIST Lite0
features, PCA 256, 10.4 s with one thread and 42.4 s with two; no size measured there gained from a second
thread, so the threshold lies above them (lower it, or pass ``n_jobs``, where idle cores do pay).
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.decomposition import PCA
from sklearn.utils._param_validation import Interval, StrOptions

from fmprobe.metrics import MetricUndefined, Prepared
from fmprobe.probes.base import (
    PROBES,
    ProbeBase,
    ProbeCannotFit,
    SequenceOf,
    auto_threads,
    expand_columns,
    select_best,
)
from fmprobe.tasks import MISSING

_AT_LEAST_ONE = Interval(Integral, 1, None, closed="left")
_FRACTION = Interval(Real, 0, 1, closed="right")
DEFAULT_PCA = (64, 256)  # principal components tried on validation (fewest first); see the module docstring
THREADS_FROM = 1_000_000_000  # training cells (rows x features) from which n_jobs="auto" uses every core
STOPPED_ON_SLICE = "train slice"  # best_params_["early_stopping"] when the rounds were stopped on the slice


def _known_rows(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of one output whose label is known (all of them for single-label codes)."""
    known = y != MISSING
    return (X, y) if known.all() else (X[known], y[known])


def stopping_slice(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray] | str:
    """(fit rows, stopping rows) of codes ``y``: a seeded ``fraction`` of every class (at least one row, and at
    least one left to fit on) goes to the stopping slice. A reason (str) instead when no slice can be drawn."""
    if fraction <= 0:
        return "off (stopping_fraction=0): fixed rounds"
    rng = np.random.default_rng(seed)
    stop = []
    for value in np.unique(y):
        members = np.flatnonzero(y == value)
        if len(members) < 2:
            return f"off: a class has {len(members)} training row, too few for a stopping slice; fixed rounds"
        take = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        stop.append(rng.choice(members, size=take, replace=False))
    stop_rows = np.sort(np.concatenate(stop))
    return np.setdiff1d(np.arange(len(y)), stop_rows), stop_rows


@PROBES.register("lgbm")
class LGBMProbe(ProbeBase):
    """LightGBM probe: one multiclass booster, or one binary booster per label for multilabel targets.

    A multilabel label with missing entries (-1) gets a booster trained, and early-stopped, on the training rows
    where it is known (its stopping slice is drawn among them).

    Parameters
    ----------
    n_estimators : maximum boosting rounds (all of them are used without a stopping slice).
    early_stopping_rounds : rounds without improvement on the stopping slice before stopping.
    stopping_fraction : share of each class's training rows held out for early stopping (0 = off: all
        ``n_estimators`` rounds on every training row).
    learning_rate, num_leaves, min_child_samples, colsample_bytree, subsample, reg_lambda : LightGBM's.
    pca_components : principal components (fitted on train) to boost on: a number, a list of numbers chosen
        on validation (default :data:`DEFAULT_PCA`), or None (the raw features).
    n_jobs : threads: "auto" (by problem size, :data:`THREADS_FROM`), a number, or -1 / None (all cores).
    random_state : seed of the stopping slice, bagging, feature sampling and PCA (training is run with
        deterministic=True).
    task, selection_metric, classes : as for every probe (see :mod:`fmprobe.probes.base`).
    """

    _parameter_constraints = {
        **ProbeBase._parameter_constraints,
        "n_estimators": [_AT_LEAST_ONE],
        "early_stopping_rounds": [_AT_LEAST_ONE],
        "stopping_fraction": [Interval(Real, 0, 1, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "num_leaves": [Interval(Integral, 2, None, closed="left")],
        "min_child_samples": [Interval(Integral, 0, None, closed="left")],
        "colsample_bytree": [_FRACTION],
        "subsample": [_FRACTION],
        "reg_lambda": [Interval(Real, 0, None, closed="left")],
        "pca_components": [_AT_LEAST_ONE, SequenceOf(_AT_LEAST_ONE), None],
        "n_jobs": [Integral, StrOptions({"auto"}), None],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        *,
        n_estimators: int = 1000,
        early_stopping_rounds: int = 50,
        stopping_fraction: float = 0.2,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 10,
        colsample_bytree: float = 0.5,
        subsample: float = 0.8,
        reg_lambda: float = 1.0,
        pca_components: int | tuple[int, ...] | None = DEFAULT_PCA,
        n_jobs: int | str | None = "auto",
        random_state: int = 0,
        task: str = "auto",
        selection_metric: str | None = None,
        classes: Any = None,
        decoding: str = "auto",
    ) -> None:
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.stopping_fraction = stopping_fraction
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
        self.decoding = decoding

    def _threads(self, shape: tuple[int, int]) -> int:
        if self.n_jobs == "auto":
            return auto_threads(shape[0] * shape[1], THREADS_FROM)
        return (os.cpu_count() or 1) if self.n_jobs in (None, -1) else int(self.n_jobs)

    def _params(self, n_classes: int, shape: tuple[int, int]) -> dict[str, Any]:
        threads = self._threads(shape)
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

    def _train_one(self, X: np.ndarray, y: np.ndarray, n_columns: int) -> dict[str, Any]:
        """Fit one booster on codes ``y`` (its present classes remapped to 0..P-1), early-stopped on a slice of
        these training rows; returns its state. A multilabel column uses only its known rows (entries != -1)."""
        X, y = _known_rows(X, y)
        present = np.unique(y)
        state: dict[str, Any] = {"booster": None, "present": present, "rounds": 0, "history": [], "metric": None,
                                 "stopping": "constant label: no booster", "n_fit": len(y), "split": True}  # fmt: skip
        if len(present) <= 1:  # a multilabel column constant (or never known) in train: predict that constant
            return state
        codes = np.searchsorted(present, y)
        params = self._params(len(present), X.shape)
        rows = stopping_slice(codes, self.stopping_fraction, self.random_state)
        history: dict[str, Any] = {}
        if isinstance(rows, str):
            state["stopping"] = rows
            train = lgb.Dataset(X, label=codes, free_raw_data=True)
            kwargs: dict[str, Any] = {}
        else:
            fit, stop = rows
            state["stopping"], state["n_fit"] = STOPPED_ON_SLICE, len(fit)
            train = lgb.Dataset(X[fit], label=codes[fit], free_raw_data=True)
            kwargs = self._early_stopping(train, (X[stop], y[stop]), present, n_columns, params, state, history)
        booster = lgb.train(params, train, num_boost_round=self.n_estimators, **kwargs)
        state["booster"] = booster
        state["rounds"] = int(booster.best_iteration or booster.current_iteration())
        state["history"] = [float(v) for v in next(iter(history.get("stop", {}).values()), [])]
        state["split"] = int(booster.feature_importance("split", iteration=state["rounds"]).sum()) > 0
        return state

    def _early_stopping(
        self,
        train: lgb.Dataset,
        stop: tuple[np.ndarray, np.ndarray],
        present: np.ndarray,
        n_columns: int,
        params: dict[str, Any],
        state: dict[str, Any],
        history: dict[str, Any],
    ) -> dict[str, Any]:
        """``lgb.train`` keywords that evaluate the selection metric on the stopping slice (``stop``: training rows
        the booster does not fit on) after every round and stop early; records the metric's name in ``state``
        (LightGBM's log-loss, set in ``params``, where the metric is undefined on the slice) and its per-round
        values in ``history``."""
        X_stop, y_stop = stop
        metric = self._selection_metric()
        kwargs: dict[str, Any] = {}
        try:  # the metric on this output's own labels, e.g. one label's AUC for a multilabel target
            metric.evaluate(Prepared(y_stop, np.full((len(y_stop), n_columns), 1.0 / n_columns)))
            state["metric"] = metric.name

            def feval(preds: np.ndarray, _data: lgb.Dataset) -> tuple[str, float, bool]:
                try:
                    return metric.name, metric.evaluate(Prepared(y_stop, self._proba(preds, present, n_columns))), True
                except MetricUndefined:
                    return metric.name, -np.inf, True

            kwargs["feval"] = feval
        except MetricUndefined:  # e.g. a class of the task absent from this small slice
            params["metric"] = state["metric"] = "binary_logloss" if len(present) == 2 else "multi_logloss"
        return {
            **kwargs,
            "valid_sets": [lgb.Dataset(X_stop, label=np.searchsorted(present, y_stop), reference=train)],
            "valid_names": ["stop"],
            "callbacks": [
                lgb.early_stopping(self.early_stopping_rounds, first_metric_only=True, verbose=False),
                lgb.record_evaluation(history),
            ],
        }

    def _check_splits(self) -> None:
        """Raise :class:`ProbeCannotFit` when a booster made no split: its predictions are one constant."""
        failed = [j for j, m in enumerate(self.models_) if not m["split"]]
        if not failed:
            return
        which = "" if self.task_ != "multilabel" else f" for label(s) {failed}"
        n_fit = self.models_[failed[0]]["n_fit"]
        cause = (
            f"{n_fit} training rows cannot fill two leaves of min_child_samples={self.min_child_samples} rows each"
            if n_fit < 2 * self.min_child_samples
            else f"no split of its {n_fit} training rows gained anything (constant or uninformative features)"
        )
        raise ProbeCannotFit(
            f"LightGBM made no split in any tree{which}: {cause}, so every prediction is the same constant and "
            "nothing can be scored. Lower min_child_samples (an lgbm probe parameter) or train on more data "
            "(a larger --train-fraction)."
        )

    def _dims(self, shape: tuple[int, int]) -> list[int | None]:
        """The projection sizes to try, fewest first; None (no projection) where a size would not reduce."""
        sizes = self.pca_components if isinstance(self.pca_components, (list, tuple, np.ndarray)) else [
            self.pca_components]  # fmt: skip
        out = [int(k) if k is not None and k < min(shape) else None for k in sizes]
        return sorted(dict.fromkeys(out), key=lambda k: min(shape) if k is None else k)

    def _fit_dims(self, X: np.ndarray, Y: np.ndarray, dims: int | None) -> tuple[PCA | None, list[dict[str, Any]]]:
        """The projection (None: the raw features) and the boosters of one candidate size."""
        pca = None if dims is None else PCA(n_components=dims, random_state=self.random_state).fit(X)
        Xp = X if pca is None else pca.transform(X).astype(np.float32)
        if self.task_ == "multilabel":
            return pca, [self._train_one(Xp, Y[:, j], 2) for j in range(Y.shape[1])]
        return pca, [self._train_one(Xp, Y, len(self.classes_))]

    def _fit(self, X: np.ndarray, Y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None, owned: bool) -> None:
        candidates = self._dims(X.shape)
        if val is None:
            candidates = candidates[-1:]  # nothing to choose on: the largest projection (closest to the raw features)
        self.search_results_, fitted = [], []
        for dims in candidates:
            self.pca_, self.models_ = self._fit_dims(X, Y, dims)
            self._check_splits()
            fitted.append((self.pca_, self.models_))
            row = {**self._chosen(), "pca_components": dims}
            row["score"] = None if val is None else self._score(val[1], self._predict_scores(val[0]))  # one look
            self.search_results_.append(row)
        scored = any(r["score"] is not None for r in self.search_results_)
        best = select_best(self.search_results_) if scored else 0
        self.pca_, self.models_ = fitted[best]
        self.best_params_ = {k: v for k, v in self.search_results_[best].items() if k != "score"}
        self.stopping_history_ = [m["history"] for m in self.models_]  # per booster: the slice's metric per round
        self.val_score_ = self.search_results_[best]["score"]
        if val is None:
            self.search_results_ = []

    def _chosen(self) -> dict[str, Any]:
        """``best_params_``: the rounds of each booster and how they were set (on the train slice, or fixed)."""
        rounds = [m["rounds"] for m in self.models_]
        stopping = sorted({m["stopping"] for m in self.models_ if m["booster"] is not None}) or [STOPPED_ON_SLICE]
        if self.task_ != "multilabel":
            return {"n_estimators": rounds[0], "early_stopping": stopping[0]}
        return {"n_estimators": rounds, "early_stopping": "; ".join(stopping)}

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

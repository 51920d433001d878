"""L2 logistic regression on standardised features, with the inverse regularisation C chosen on validation.

The C grid is swept from strong to weak regularisation with scikit-learn's lbfgs solver refitting one
estimator in place (``warm_start=True``): each fit starts from the previous optimum, so the whole sweep
costs little more than the hardest single fit (``bench/probe_speed.py`` measures it against fresh fits).
The objective is strictly convex, so the warm-started solution equals a fresh fit at the same C up to the
solver tolerance.

The solver runs with ``n_threads`` BLAS/OpenMP threads (default 1). Each lbfgs iteration alternates
short matrix products with Cython/Python work, and idle pool threads busy-wait meanwhile (numpy and
scipy even load two OpenBLAS pools): on a 2-core machine one 50k x 1024 fit took 6 s with one thread and
10-29 s with two, a 5k x 768 fit 0.6 s against 10-14 s. Pass ``n_threads=None`` to keep the library
defaults where more cores do pay off.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import Interval, StrOptions
from threadpoolctl import threadpool_limits

from fmprobe.probes.base import (
    PROBES,
    ProbeBase,
    SequenceOf,
    expand_columns,
    label_prior,
    select_best,
    standardize_inplace_stats,
    transform_rows,
)
from fmprobe.tasks import MISSING

DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 4, 17))  # what ``Cs=None`` searches
_POSITIVE = Interval(Real, 0, None, closed="neither")


@PROBES.register("logreg")
class LogisticProbe(ProbeBase):
    """Logistic-regression probe (multinomial for multiclass, one-vs-rest per label for multilabel).

    A multilabel label with missing entries (-1) is fitted on the rows where it is known only.

    Parameters
    ----------
    Cs : grid of inverse regularisation strengths searched with ``eval_set`` (default 17 values 1e-4..1e4).
    C : the value used without ``eval_set``.
    class_weight : None, "balanced" or a dict {label: weight} (multilabel: {0: w0, 1: w1} per label).
    max_iter, tol : lbfgs limits per fit.
    warm_start : sweep the C path warm-started (True) or with independent fits (False).
    n_threads : BLAS/OpenMP threads while fitting (None: leave the thread pools as they are).
    task : "auto" (2-D y -> multilabel, 2 classes -> binary, else multiclass) or an explicit task;
        "ordinal" only changes the selection metric (quadratic kappa).
    selection_metric : metric name for choosing C; None means the task's primary metric.
    classes : every class label, in column order, when some may be missing from the training set.
    """

    _parameter_constraints = {
        **ProbeBase._parameter_constraints,
        "Cs": [SequenceOf(_POSITIVE), None],
        "C": [_POSITIVE],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "warm_start": ["boolean"],
        "n_threads": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        *,
        Cs: tuple[float, ...] | None = None,
        C: float = 1.0,
        class_weight: str | dict | None = None,
        max_iter: int = 1000,
        tol: float = 1e-4,
        warm_start: bool = True,
        n_threads: int | None = 1,
        task: str = "auto",
        selection_metric: str | None = None,
        classes: Any = None,
        decoding: str = "auto",
    ) -> None:
        self.Cs = Cs
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.warm_start = warm_start
        self.n_threads = n_threads
        self.task = task
        self.selection_metric = selection_metric
        self.classes = classes
        self.decoding = decoding

    def _class_weight(self, present: np.ndarray) -> str | dict | None:
        """``class_weight`` re-keyed from labels to the integer codes the solver sees."""
        if not isinstance(self.class_weight, dict):
            return self.class_weight
        if self.task_ == "multilabel":
            return self.class_weight
        codes = {label: i for i, label in enumerate(self.classes_.tolist())}
        return {codes[k]: w for k, w in self.class_weight.items() if k in codes and codes[k] in present}

    def _path(self, Xs: np.ndarray, y: np.ndarray, Cs: list[float]) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """(coef, intercept, n_iter) at each C, fitted from small to large C on one output.

        A multilabel column is fitted on its known rows (entries != -1) only.
        """
        known = y != MISSING
        if not known.all():
            Xs, y = Xs[known], y[known]
        present = np.unique(y)
        if len(present) <= 1:  # a multilabel column constant (or never known) in train: predict its prevalence
            p = float(np.clip(label_prior(y), 1e-12, 1 - 1e-12))
            const = (np.zeros((1, Xs.shape[1])), np.array([np.log(p / (1 - p))]), 0)
            return [const for _ in Cs]
        lr = LogisticRegression(
            C=Cs[0],
            class_weight=self._class_weight(present),
            max_iter=self.max_iter,
            tol=self.tol,
            solver="lbfgs",
            warm_start=self.warm_start,
        )
        out = []
        for C in Cs:
            lr.set_params(C=C)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # recorded as converged=False instead
                lr.fit(Xs, y)
            out.append((lr.coef_.astype(np.float64), lr.intercept_.astype(np.float64), int(np.max(lr.n_iter_))))
        return out

    def _fit(self, X: np.ndarray, Y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None, owned: bool) -> None:
        self.mean_, self.scale_ = standardize_inplace_stats(X)
        mean, scale = self.mean_.astype(X.dtype), self.scale_.astype(X.dtype)
        Xs = transform_rows(X, lambda b: (b - mean) / scale, owned)
        Cs = [float(c) for c in (self.Cs if self.Cs is not None else DEFAULT_CS)]
        Cs = sorted(Cs) if val is not None else [float(self.C)]
        outputs = [Y[:, j] for j in range(Y.shape[1])] if self.task_ == "multilabel" else [Y]
        self.present_ = np.arange(Y.shape[1]) if self.task_ == "multilabel" else np.unique(Y)
        with threadpool_limits(limits=self.n_threads):
            paths = [self._path(Xs, y, Cs) for y in outputs]
        del Xs
        self.search_results_ = []
        for i, C in enumerate(Cs):
            self._set_coefs([p[i] for p in paths])
            n_iter = max(p[i][2] for p in paths)
            row = {"C": C, "score": None, "n_iter": n_iter, "converged": n_iter < self.max_iter}
            if val is not None:
                row["score"] = self._score(val[1], self._predict_scores(val[0]))
            self.search_results_.append(row)
        best = select_best(self.search_results_) if val is not None else 0
        self._set_coefs([p[best] for p in paths])
        self.best_params_ = {"C": Cs[best]}
        self.val_score_ = self.search_results_[best]["score"]
        if val is None:
            self.search_results_ = []  # nothing was searched; n_iter_ still tells how the fit went

    def _set_coefs(self, fits: list[tuple[np.ndarray, np.ndarray, int]]) -> None:
        self.coef_ = np.concatenate([f[0] for f in fits], axis=0)  # in standardised feature space
        self.intercept_ = np.concatenate([f[1] for f in fits])
        self.n_iter_ = np.array([f[2] for f in fits], dtype=np.int32)

    def _predict_scores(self, X: np.ndarray) -> np.ndarray:
        w = (self.coef_ / self.scale_).astype(X.dtype)  # standardisation folded into the weights: no copy of X
        b = self.intercept_ - (self.coef_ / self.scale_) @ self.mean_
        z = (X @ w.T).astype(np.float64) + b
        if self.task_ == "multilabel":
            return expit(z)
        if z.shape[1] == 1:  # two classes seen in training: sklearn's binary parametrisation
            p = expit(z[:, 0])
            proba = np.stack([1.0 - p, p], axis=1)
        else:
            proba = softmax(z, axis=1)
        return expand_columns(proba, self.present_, len(self.classes_))

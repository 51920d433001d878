"""L2 logistic regression on standardised features, with the inverse regularisation C chosen on validation.

The whole C grid is solved as one batched problem (:mod:`fmprobe.probes.logistic_path`: a diagonal basis of the
features, a preconditioner per C, one matrix product per iteration for every C still converging), whose optimum
at each C is scikit-learn's ``LogisticRegression(solver="lbfgs")`` optimum at that C: the same objective,
multinomial for more than two classes, the same gradient stopping rule (``tol``). ``bench/probe_speed.py``
measures the path against a loop of fresh scikit-learn fits and against ``LogisticRegressionCV`` and asserts the
same chosen C; ``tests/probes/test_probes_logistic_path.py`` checks the test metrics at that C on real features.

Threads: ``n_threads="auto"`` (the default) uses one BLAS thread below :data:`THREADS_FROM` multiply-adds per
iteration and every core above it. Measured on a shared 2-core AMD EPYC (``bench/probe_speed.py``), a second
thread paid at no size: the PneumoniaMNIST path (4708 x 1280, 17 columns) took 11.2 s with one thread and 22.9 s
with two (scikit-learn's fresh-fit loop: 23.5 s and 74.8 s), and one 20k x 768 x 170-column product pair 0.50 s
against 0.64 s. The threshold therefore lies above every size measured; lower it where idle cores do pay. Pass an
integer to fix it, or None to leave the thread pools as they are.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from scipy.special import expit, softmax
from sklearn.utils._param_validation import Interval, StrOptions
from threadpoolctl import threadpool_limits

from fmprobe.probes.base import (
    PROBES,
    ProbeBase,
    SequenceOf,
    auto_threads,
    expand_columns,
    label_prior,
    select_best,
    standardize_inplace_stats,
    transform_rows,
)
from fmprobe.probes.logistic_path import Basis, Problems, diagonal_basis, solve_path
from fmprobe.tasks import MISSING

DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 4, 17))  # what ``Cs=None`` searches
THREADS_FROM = 1e11  # multiply-adds per iteration (N x r x columns) from which "auto" uses every core
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
    max_iter, tol : L-BFGS limits per C: iterations, and scikit-learn's gtol (the largest absolute gradient entry;
        1e-5 by default, tighter than scikit-learn's 1e-4, whose solution can flip borderline test predictions;
        see :mod:`fmprobe.probes.logistic_path`).
    n_threads : BLAS threads while fitting: "auto" (by problem size: :data:`THREADS_FROM`), a number, or
        None (leave the thread pools as they are).
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
        "n_threads": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"}), None],
    }

    def __init__(
        self,
        *,
        Cs: tuple[float, ...] | None = None,
        C: float = 1.0,
        class_weight: str | dict | None = None,
        max_iter: int = 1000,
        tol: float = 1e-5,
        n_threads: int | str | None = "auto",
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
        self.n_threads = n_threads
        self.task = task
        self.selection_metric = selection_metric
        self.classes = classes
        self.decoding = decoding

    def _weights(self, y: np.ndarray) -> np.ndarray:
        """Per-row sample weights of one output's codes or 0/1 labels (0 where missing), as scikit-learn derives them
        from ``class_weight``: "balanced" is ``n / (n_present * n_k)`` over the known rows, a dict maps labels (for
        multilabel: the values 0 and 1) to weights, 1 for labels it leaves out."""
        known = y != MISSING
        sw = known.astype(np.float64)
        if self.class_weight is None:
            return sw
        present, counts = np.unique(y[known], return_counts=True)
        if self.class_weight == "balanced":
            table = dict(zip(present.tolist(), (known.sum() / (len(present) * counts)).tolist(), strict=True))
        elif self.task_ == "multilabel":
            table = {v: float(self.class_weight.get(v, 1.0)) for v in (0, 1)}
        else:
            labels = self.classes_.tolist()
            table = {c: float(self.class_weight.get(labels[c], 1.0)) for c in present.tolist()}
        for value, weight in table.items():
            sw[known & (y == value)] = weight
        return sw

    def _problems(self, Y: np.ndarray, Cs: list[float]) -> tuple[Problems, list[int]]:
        """The batch of (output, C) problems; multilabel columns constant in train get no problem (their prior)."""
        if self.task_ != "multilabel":
            K = 1 if len(self.present_) == 2 else len(self.present_)
            codes = np.searchsorted(self.present_, Y)
            target = (codes == 1).astype(np.float64) if K == 1 else codes.astype(np.float64)
            cols = [0]
            pr_y, sw = target[:, None], self._weights(Y)[:, None]
        else:
            cols = [j for j in range(Y.shape[1]) if len(np.unique(Y[Y[:, j] != MISSING, j])) == 2]
            K, pr_y = 1, (Y[:, cols] == 1).astype(np.float64)
            sw = np.stack([self._weights(Y[:, j]) for j in cols], axis=1) if cols else np.zeros((len(Y), 0))
        col = np.repeat(np.arange(len(cols)), len(Cs))
        return Problems(pr_y, sw, col, np.tile(np.asarray(Cs, dtype=np.float64), len(cols)), K), cols

    def _path(self, basis: Basis, Y: np.ndarray, Cs: list[float]) -> list[list[tuple[np.ndarray, np.ndarray, int]]]:
        """Per C: the (coef [K, D], intercept [K], n_iter) of every output, all C values solved as one batch."""
        pr, cols = self._problems(Y, Cs)
        fit = solve_path(basis, pr, self.max_iter, self.tol) if len(pr.C) else None
        self.converged_path_ = [True] * len(Cs)
        per_c: list[list[tuple[np.ndarray, np.ndarray, int]]] = []
        for i in range(len(Cs)):
            fits = []
            for j in range(Y.shape[1] if self.task_ == "multilabel" else 1):
                if j not in cols:  # constant (or never known) in train: predict its prevalence
                    p = float(np.clip(label_prior(Y[:, j]), 1e-12, 1 - 1e-12))
                    fits.append((np.zeros((1, basis.B.shape[0])), np.array([np.log(p / (1 - p))]), 0))
                    continue
                p = cols.index(j) * len(Cs) + i
                fits.append(((basis.B @ fit.W[p]).T, fit.b[p], int(fit.n_iter[p])))
                self.converged_path_[i] &= bool(fit.converged[p])
            per_c.append(fits)
        return per_c

    def _fit(self, X: np.ndarray, Y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None, owned: bool) -> None:
        self.mean_, self.scale_ = standardize_inplace_stats(X)
        mean, scale = self.mean_.astype(X.dtype), self.scale_.astype(X.dtype)
        Xs = transform_rows(X, lambda b: (b - mean) / scale, owned)
        Cs = [float(c) for c in (self.Cs if self.Cs is not None else DEFAULT_CS)]
        Cs = sorted(Cs) if val is not None else [float(self.C)]
        self.present_ = np.arange(Y.shape[1]) if self.task_ == "multilabel" else np.unique(Y)
        with threadpool_limits(limits=self._threads(Xs.shape, Y, len(Cs))):
            basis = diagonal_basis(Xs)
            del Xs
            per_c = self._path(basis, Y, Cs)
        del basis
        self.search_results_ = []
        for i, C in enumerate(Cs):
            self._set_coefs(per_c[i])
            n_iter = max(f[2] for f in per_c[i])
            row = {"C": C, "score": None, "n_iter": n_iter, "converged": self.converged_path_[i]}
            if val is not None:
                row["score"] = self._score(val[1], self._predict_scores(val[0]))
            self.search_results_.append(row)
        best = select_best(self.search_results_) if val is not None else 0
        self._set_coefs(per_c[best])
        self.best_params_ = {"C": Cs[best]}
        self.val_score_ = self.search_results_[best]["score"]
        if val is None:
            self.search_results_ = []  # nothing was searched; n_iter_ still tells how the fit went

    def _threads(self, shape: tuple[int, int], Y: np.ndarray, n_cs: int) -> int | None:
        if self.n_threads != "auto":
            return self.n_threads
        width = Y.shape[1] if self.task_ == "multilabel" else (1 if len(self.present_) == 2 else len(self.present_))
        return auto_threads(shape[0] * min(shape) * width * n_cs, THREADS_FROM)

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

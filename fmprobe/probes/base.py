"""What the three probes share: the scikit-learn contract, target encoding and validation-only selection.

A probe is fitted with ``fit(X, y, eval_set=(X_val, y_val))``. Hyper-parameters are chosen on the
validation set *only*, with the task's primary metric unless ``selection_metric`` names another; the
final model is the one fitted on the training set with the chosen values (never refitted on train + val,
so the test set and the validation labels cannot leak into the weights). Candidates are listed from most
to least regularised and the first one reaching the best validation score wins, so ties go to the
simpler model deterministically. Without ``eval_set`` the probe's default hyper-parameters are used.

Targets: 1-D labels of any hashable type (``classes_`` holds them, or the ``classes`` parameter fixes
them so that ``predict_proba`` has a column for a class absent from a small training set), or a 2-D 0/1
matrix ``[N, L]`` for multilabel tasks (``classes_`` is then ``arange(L)`` and ``predict_proba`` returns
``[N, L]`` per-label probabilities, the layout of :mod:`fmprobe.metrics`).

Parameters: every probe declares ``_parameter_constraints`` (scikit-learn's ``sklearn.utils._param_validation``),
checked when ``fit`` starts and by :func:`fmprobe.probes.make_probe` when a probe is built, so a bad value fails
early with :class:`ProbeParameterError`, naming the probe and the parameter, instead of deep inside numpy or
LightGBM. A probe is *stochastic* (its fit depends on a seed, so repeats on all the data differ) exactly when it
has a ``random_state`` parameter: see :func:`is_stochastic`.

Missing labels: a multilabel matrix may hold ``-1`` (``fmprobe.tasks.MISSING``, e.g. CheXpert's
``uncertain=ignore``) for an unknown entry, in ``y`` and in the validation labels. Each label is then
trained on the rows where it is known (logreg: one-vs-rest fit per label; LightGBM: one booster per
label; kNN: per-label vote among the neighbours that know the label), validation uses the masked metrics
of :mod:`fmprobe.metrics`, and ``predict_proba`` still returns a probability for every row and label.
For 1-D targets -1 is missing nowhere: with an explicit single-label ``task`` or ``classes`` that leave it
out, a -1 is rejected with an error that says so; with ``task="auto"`` and no ``classes`` it is an
ordinary class label, as in scikit-learn (whose own checks use labels {-1, 1}).

Ordinal decoding: every probe has a ``decoding`` parameter (one of the shared parameters each probe's ``__init__``
lists, checked when a probe class is defined). For ``task="ordinal"`` it is
``"auto"`` (chosen on validation with the other hyper-parameters, recorded in ``best_params_["decoding"]``),
``"argmax"``, ``"expected"`` or ``"thresholds"`` (see :mod:`fmprobe.probes.decoding`), and ``predict`` returns
the decoded grades; other tasks decode by argmax only and refuse the others.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import InvalidParameterError, Options, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from fmprobe.errors import ProbeError
from fmprobe.metrics import Metric, MetricUndefined, Prepared, get_metric
from fmprobe.probes.decoding import ORDINAL_DECODINGS, Decoding, cross_fitted, decode, expected_grade, fit_cuts
from fmprobe.registry import Registry
from fmprobe.tasks import MISSING, PRIMARY_METRIC, TASK_TYPES

FLOATS = [np.float32, np.float64]  # float16 and ints become float32; float64 stays float64
ROW_BLOCK = 8192  # rows per block when standardising/normalising in place (bounds float64 temporaries)
SHARED_PARAMETERS = ("task", "selection_metric", "classes", "decoding")  # every probe's __init__ takes these
TIE_TOL = 1e-12  # validation scores this close count as a tie (go to the more regularised candidate)


class ProbeFitError(ProbeError, ValueError):
    """A probe cannot be fitted on these targets (e.g. one class only, labels missing from train)."""


class ProbeCannotFit(ProbeError):
    """The probe ran but learned nothing that can be scored (e.g. LightGBM made no split on 5 training images):
    the cell is recorded as missing with this reason, never as a measured chance-level value."""


class ProbeParameterError(ProbeError, InvalidParameterError):
    """A probe parameter outside its declared constraints (scikit-learn's InvalidParameterError, and a
    ProbeError so the CLI reports it as one message)."""


class SequenceOf(Options):
    """Constraint: a non-empty list or tuple whose every item satisfies ``item`` (e.g. kNN's ``ks``).

    Subclasses ``Options`` only so scikit-learn's ``make_constraint`` accepts it as a constraint object."""

    def __init__(self, item: Any) -> None:
        super().__init__(object, set())
        self.item = item

    def is_satisfied_by(self, val: Any) -> bool:
        return (
            isinstance(val, (list, tuple, np.ndarray))
            and len(val) > 0
            and all(self.item.is_satisfied_by(v) for v in val)
        )

    def __str__(self) -> str:
        return f"a non-empty list or tuple, each item {self.item}"


@contextlib.contextmanager
def _named_non_finite(what: str, X: Any) -> Iterator[None]:
    """scikit-learn refuses NaN/inf features with a bare ValueError; say where such features come from and the fix
    (checked only once validation failed, so a clean fit pays nothing)."""
    try:
        yield
    except ValueError:
        try:
            finite = bool(np.isfinite(np.asarray(X, dtype=np.float64)).all())
        except (TypeError, ValueError):
            finite = True  # not numeric: scikit-learn's own message says what is wrong
        if finite:
            raise
        raise ProbeFitError(
            f"{what} contains NaN or infinite features. Features from `fmprobe extract`: re-extract with --force; "
            "if it persists the weights are broken: check --weights."
        ) from None


def owns(X: np.ndarray, X_in: object) -> bool:
    """True when validation converted the input into a new array, so it may be modified in place."""
    return isinstance(X_in, np.ndarray) and X_in.dtype != X.dtype and not np.may_share_memory(X, X_in)


def expand_columns(proba: np.ndarray, present: np.ndarray, n_columns: int) -> np.ndarray:
    """Place columns for the classes seen in training (``present`` codes) among ``n_columns`` classes."""
    if len(present) == n_columns:
        return proba
    out = np.zeros((proba.shape[0], n_columns), dtype=proba.dtype)
    out[:, present] = proba
    return out


def label_prior(y: np.ndarray) -> float:
    """Fraction of positives among one label's known entries (0.5 when none is known)."""
    known = y[y != MISSING]
    return float(known.mean()) if len(known) else 0.5


def select_best(results: Sequence[dict[str, Any]]) -> int:
    """Index of the first (most regularised) candidate whose ``score`` is within TIE_TOL of the best."""
    scores = np.array([np.nan if r["score"] is None else r["score"] for r in results], dtype=np.float64)
    if not np.isfinite(scores).any():
        raise ProbeFitError("the selection metric was undefined for every candidate on the validation set")
    best = np.nanmax(scores)
    return int(np.flatnonzero(scores >= best - TIE_TOL)[0])


class ProbeBase(ClassifierMixin, BaseEstimator):
    """Shared fit/predict plumbing. Subclasses implement ``_fit`` and ``_predict_scores``.

    ``_fit(X, Y, val, owned)`` gets validated float features, encoded targets (codes ``0..C-1`` or a 0/1
    matrix), ``val = (X_val, Y_val)`` or None, and whether ``X`` may be modified in place; it must set
    ``best_params_``, ``val_score_`` and ``search_results_``. Subclasses extend ``_parameter_constraints``
    with their own parameters (``{**ProbeBase._parameter_constraints, ...}``).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "task": [StrOptions({"auto", *TASK_TYPES})],
        "selection_metric": [str, None],
        "classes": ["array-like", None],
        "decoding": [StrOptions({d.value for d in Decoding})],
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse, when the class is defined, a probe whose ``__init__`` leaves out a shared parameter: scikit-learn
        reads parameters from the ``__init__`` signature (``get_params``, ``clone``), so each probe lists them."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        missing = [] if init is None else [p for p in SHARED_PARAMETERS if p not in inspect.signature(init).parameters]
        if missing:
            raise TypeError(f"{cls.__name__}.__init__ must take the shared probe parameter(s) {', '.join(missing)}")

    def _validate_params(self) -> None:
        """Check every parameter against ``_parameter_constraints`` (and the selection metric's name)."""
        try:
            super()._validate_params()
        except InvalidParameterError as err:
            raise ProbeParameterError(str(err)) from None
        if self.selection_metric is not None:
            get_metric(self.selection_metric)  # an unknown name fails here, with the closest ones
        if self.decoding not in (Decoding.auto, Decoding.argmax) and self.task != "ordinal":
            raise ProbeParameterError(
                f"The 'decoding' parameter of {type(self).__name__} is {self.decoding!r}, but only ordinal tasks "
                f"decode grades (task={self.task!r} decodes by argmax): pass task='ordinal', or drop decoding="
            )

    # --------------------------------------------------------------------------- scikit-learn protocol
    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn's Tags type
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any, eval_set: tuple[Any, Any] | None = None) -> ProbeBase:
        """Fit on (X, y); with ``eval_set=(X_val, y_val)`` choose hyper-parameters on it first."""
        X_in = X
        with _named_non_finite("X", X):
            X, y = validate_data(self, X, y, multi_output=True, dtype=FLOATS)
        Y = self._encode_train_targets(y)
        val = None
        if eval_set is not None:
            if not isinstance(eval_set, (tuple, list)) or len(eval_set) != 2:
                raise ProbeFitError("eval_set must be a pair (X_val, y_val)")
            with _named_non_finite("eval_set X", eval_set[0]):
                X_val = validate_data(self, eval_set[0], reset=False, dtype=FLOATS)
            Y_val = self._encode_targets(eval_set[1], "eval_set y", self.task_ == "multilabel")
            if len(Y_val) != len(X_val):
                raise ProbeFitError(f"eval_set has {len(X_val)} rows in X but {len(Y_val)} labels")
            self._check_selectable(Y_val)
            val = (X_val, Y_val)
        elif self.decoding == Decoding.thresholds:
            raise ProbeFitError(
                "decoding='thresholds' fits its cut-points on validation: pass eval_set=(X_val, y_val), or use "
                "decoding='expected' (the cut-points' starting values k - 0.5)"
            )
        self._fit(X, Y, val, owns(X, X_in))
        self._choose_decoding(val)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[N, len(classes_)]``, or per-label probabilities ``[N, L]`` (multilabel)."""
        check_is_fitted(self)
        with _named_non_finite("X", X):
            X = validate_data(self, X, reset=False, dtype=FLOATS)
        return self._predict_scores(X)

    def predict(self, X: Any) -> np.ndarray:
        """Argmax class (ties -> first class), the decoded grade (ordinal: ``decoding_``), or ``proba > 0.5`` per
        label for multilabel targets."""
        proba = self.predict_proba(X)
        if self.task_ == "multilabel":
            return (proba > 0.5).astype(np.int64)
        return self.classes_[decode(proba, self.decoding_, self.cuts_)]

    # --------------------------------------------------------------------------- targets
    def _encode_train_targets(self, y: np.ndarray) -> np.ndarray:
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if y.ndim == 2:
            self._check_multilabel(y, "y", y.shape[1])
            if self.task not in ("auto", "multilabel"):
                raise ProbeFitError(f"task={self.task!r} needs 1-D labels; 2-D y means multilabel")
            self.classes_ = np.arange(y.shape[1])
            self.task_ = "multilabel"
            return y.astype(np.int64)
        if self.task == "multilabel":
            raise ProbeFitError("task='multilabel' needs y as a 0/1 matrix [N, L], got 1-D labels")
        if self.task != "auto" and self.classes is None and np.isin(MISSING, y):
            raise ProbeFitError(self._missing_single_label("y", y))
        self.classes_ = np.unique(y) if self.classes is None else np.asarray(self.classes)
        codes = self._encode_targets(y, "y", multilabel=False)
        present = np.unique(codes)
        if len(present) < 2:
            raise ProbeFitError(
                f"y has only one class ({self.classes_[present].tolist()}); a probe needs at least 2 classes"
            )
        n = len(self.classes_)
        self.task_ = ("binary" if n == 2 else "multiclass") if self.task == "auto" else self.task
        if self.task_ == "binary" and n != 2:
            raise ProbeFitError(f"task='binary' but y has {n} classes: {self.classes_.tolist()}")
        return codes

    def _encode_targets(self, y: Any, what: str, multilabel: bool) -> np.ndarray:
        """Map labels to column indices of ``classes_`` (multilabel: check the 0/1 matrix's width)."""
        y = np.asarray(y)
        if multilabel:
            if y.ndim != 2 or y.shape[1] != len(self.classes_):
                raise ProbeFitError(
                    f"{what} must be a 0/1 matrix with {len(self.classes_)} label columns "
                    f"({MISSING} = missing), got shape {y.shape}"
                )
            self._check_multilabel(y, what, y.shape[1])
            return y.astype(np.int64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        sorter = np.argsort(self.classes_)
        pos = np.clip(np.searchsorted(self.classes_, y, sorter=sorter), 0, len(self.classes_) - 1)
        codes = sorter[pos]
        unknown = self.classes_[codes] != y
        if unknown.any() and np.isin(MISSING, y[unknown]):
            raise ProbeFitError(self._missing_single_label(what, y))
        if unknown.any():
            raise ProbeFitError(
                f"{what} contains labels {np.unique(y[unknown]).tolist()[:10]} that are not in the classes "
                f"{self.classes_.tolist()[:20]}; pass classes=[...] listing every class"
            )
        return codes.astype(np.int64)

    @staticmethod
    def _check_multilabel(y: np.ndarray, what: str, width: int) -> None:
        bad = ~np.isin(y, (0, 1, MISSING))
        if bad.any():
            raise ProbeFitError(
                f"{what} is 2-D, so it must be a multilabel matrix [N, {width}] of 0/1 with {MISSING} = missing; "
                f"found values {np.unique(y[bad]).tolist()[:10]}"
            )

    def _missing_single_label(self, what: str, y: np.ndarray) -> str:
        task = self.task_ if hasattr(self, "task_") else self.task
        return (
            f"{what} contains {MISSING} in {int(np.sum(y == MISSING))} of {len(y)} rows, but {MISSING} marks a "
            f"missing label, which only multilabel targets [N, L] may hold (task {task!r}). Drop those rows, "
            "or pass classes=[...] including -1 if it is a real class"
        )

    # --------------------------------------------------------------------------- selection
    def _selection_metric(self) -> Metric:
        return get_metric(self.selection_metric or PRIMARY_METRIC[self.task_])

    def _check_selectable(self, Y_val: np.ndarray) -> None:
        """Fail early when the selection metric cannot be computed on these validation labels at all."""
        metric = self._selection_metric()
        width = len(self.classes_)
        uniform = np.full((len(Y_val), width), 0.5 if self.task_ == "multilabel" else 1.0 / width)
        try:
            metric.evaluate(Prepared(Y_val, uniform))
        except MetricUndefined as e:
            raise ProbeFitError(
                f"selection metric {metric.name!r} cannot be computed on the validation labels: {e.reason}. "
                "Use a larger validation split or pass selection_metric=... (e.g. 'balanced_accuracy')"
            ) from None

    def _metric(self, Y_val: np.ndarray, scores: np.ndarray, pred: np.ndarray | None = None) -> float | None:
        """Selection metric on validation scores (and decoded grades); None when it is undefined."""
        try:
            return self._selection_metric().evaluate(Prepared(Y_val, scores, pred))
        except MetricUndefined:
            return None

    def _score(self, Y_val: np.ndarray, scores: np.ndarray) -> float | None:
        """Selection metric of one candidate on validation; ordinal: its best over the decodings allowed, so the
        decoding is chosen jointly with the candidate's other hyper-parameters."""
        if self.task_ != "ordinal":
            return self._metric(Y_val, scores)
        found = [s for s in self._decoding_scores(Y_val, scores).values() if s is not None]
        return max(found) if found else None

    def _decodings(self) -> tuple[str, ...]:
        return ORDINAL_DECODINGS if self.decoding == Decoding.auto else (str(Decoding(self.decoding).value),)

    def _decoding_scores(self, Y_val: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
        """Validation score under each candidate decoding; ``thresholds`` cross-fitted (see
        :mod:`fmprobe.probes.decoding`), so fitting its cut-points on the scored rows cannot win the choice."""
        grade, n = expected_grade(scores), scores.shape[1]
        out: dict[str, float | None] = {}
        for d in self._decodings():
            pred = cross_fitted(grade, Y_val, self._scorer(Y_val, scores), n) if d == "thresholds" else None
            out[d] = self._metric(Y_val, scores, decode(scores, d) if pred is None else pred)
        return out

    def _scorer(self, Y_val: np.ndarray, scores: np.ndarray) -> Any:
        return lambda rows, pred: self._metric(Y_val[rows], scores[rows], pred)

    def _choose_decoding(self, val: tuple[np.ndarray, np.ndarray] | None) -> None:
        """Set ``decoding_`` (and ``cuts_`` for thresholds, refitted on the whole validation set) for the chosen
        model; record it in ``best_params_`` for ordinal tasks."""
        self.decoding_, self.cuts_, self.decoding_scores_ = Decoding.argmax.value, None, {}
        if self.task_ != "ordinal":
            return
        if val is None:
            self.decoding_ = Decoding.argmax.value if self.decoding == Decoding.auto else str(self.decoding)
        else:
            X_val, Y_val = val
            scores = self._predict_scores(X_val)
            self.decoding_scores_ = self._decoding_scores(Y_val, scores)
            found = {d: s for d, s in self.decoding_scores_.items() if s is not None}
            if found:
                top = max(found.values())
                self.decoding_ = next(d for d, s in found.items() if s >= top - TIE_TOL)
                self.val_score_ = found[self.decoding_]
            else:
                self.decoding_ = self._decodings()[0]
            if self.decoding_ == Decoding.thresholds:
                rows = np.arange(len(Y_val))
                self.cuts_ = fit_cuts(expected_grade(scores), rows, self._scorer(Y_val, scores), scores.shape[1])
        self.best_params_ = {**self.best_params_, "decoding": self.decoding_}
        if self.cuts_ is not None:  # recorded so the row says exactly how its grades were decoded
            self.best_params_["cuts"] = [float(c) for c in self.cuts_]

    # --------------------------------------------------------------------------- subclass hooks
    def _fit(self, X: np.ndarray, Y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None, owned: bool) -> None:
        raise NotImplementedError

    def _predict_scores(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError


PROBES: Registry[type[ProbeBase]] = Registry("probe")  # each probe module registers its class next to it


def is_stochastic(probe: str | ProbeBase | type[ProbeBase]) -> bool:
    """Whether a probe's fit depends on a seed (so repeats on all the training data differ): it has a
    ``random_state`` parameter, as in scikit-learn. Accepts a registry name, a class or an instance."""
    entry = PROBES.get(probe) if isinstance(probe, str) else probe
    instance = entry() if isinstance(entry, type) else entry
    return "random_state" in instance.get_params()


def auto_threads(work: float, threshold: float, cores: int | None = None) -> int:
    """Threads for a fit: every core once its work per step (multiply-adds, rows x features, ...) reaches
    ``threshold``, one below it. Each probe measures its own threshold (see its module docstring): on small problems
    a second thread costs more than it brings (pool threads spin-wait between short steps, and on a shared machine
    they compete with other processes)."""
    cores = cores or os.cpu_count() or 1
    return cores if work >= threshold else 1


def standardize_inplace_stats(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std in float64, computed in row blocks (no float64 copy of X); zero std -> 1."""
    n = X.shape[0]
    total = np.zeros(X.shape[1])
    for i in range(0, n, ROW_BLOCK):
        total += X[i : i + ROW_BLOCK].sum(axis=0, dtype=np.float64)
    mean = total / n
    sq = np.zeros(X.shape[1])
    for i in range(0, n, ROW_BLOCK):
        sq += ((X[i : i + ROW_BLOCK] - mean) ** 2).sum(axis=0)
    scale = np.sqrt(sq / n)
    scale[scale < 10 * np.finfo(np.float64).eps] = 1.0  # StandardScaler's rule for constant features
    return mean, scale


def transform_rows(X: np.ndarray, fn: Any, owned: bool) -> np.ndarray:
    """Apply a row-wise ``fn(block) -> block`` in blocks, in place when ``owned`` (else into a new array)."""
    out = X if owned else np.empty_like(X)
    for i in range(0, X.shape[0], ROW_BLOCK):
        out[i : i + ROW_BLOCK] = fn(X[i : i + ROW_BLOCK])
    return out


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), in X's dtype."""
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
    norms[norms == 0] = 1.0
    return (X / norms[:, None]).astype(X.dtype, copy=False)

"""Classification metrics as plain functions of arrays, each also evaluable on many weighted resamples at once.

Every metric is computed from *sample weights*: the ordinary value uses weight 1 per sample, a bootstrap
resample uses the number of times each sample was drawn. A matrix of weights ``W`` of shape ``[B, N]``
therefore evaluates ``B`` resamples with a few matrix products and one sort per score column, which is
what makes a 1000-resample bootstrap on 10k samples take a second instead of minutes.

Conventions (shared with probes/ and the results table):

* ``y_true`` 1-D ints in ``0..C-1`` with ``y_score`` ``[N, C]`` class probabilities (binary: C = 2; a 1-D
  ``y_score`` is read as the positive-class probability); ``y_true`` 2-D 0/1 ``[N, L]`` means multilabel
  with ``y_score`` ``[N, L]`` per-label probabilities.
* Multilabel ``y_true`` may hold ``-1`` (:data:`MISSING`, e.g. CheXpert's ``uncertain=ignore``): that entry
  is unknown and every metric leaves it out, label by label (see "Missing labels" below). Single-label
  targets have no missing value: a ``-1`` there is an input error.
* The predicted class is the argmax (ties -> lowest class index); a multilabel prediction is
  ``score > 0.5`` (a score of exactly 0.5 is negative, matching the argmax tie rule for binary).
* A value that cannot be computed raises :class:`MetricUndefined` with the reason; nothing returns a
  placeholder such as 0.5.
* ``ece`` (expected calibration error, lower is better) bins the top-class confidence of the scores, never the
  decoded grades; its definition is in :mod:`fmprobe.metrics.calibration`.

Missing labels (multilabel only). Let ``known[i, j]`` be ``y_true[i, j] != -1``.

* ``roc_auc``: label ``j``'s AUC over the rows where it is known; mean over the labels whose known entries
  contain both classes (others skipped, as without missing entries).
* ``balanced_accuracy``: label ``j``'s binary balanced accuracy over its known rows; mean over labels with
  at least one known entry.
* ``macro_f1``: label ``j``'s positive-class F1 from the confusion table of its known rows; mean over labels
  with a positive among those rows' truth or predictions.
* ``subset_accuracy`` (exact match): a row is right when every *known* entry of it is predicted right; rows
  with no known entry are left out of the denominator. Missing cells are "don't care", as with torchmetrics'
  ``ignore_index``; unlike "exact match over complete rows only" it does not drop every row with one
  uncertain finding (half of CheXpert), which would score a biased, easier subset.
* ``label_accuracy``: label ``j``'s accuracy over its known rows; mean over labels with at least one known
  entry (MedMNIST's published multi-label "ACC"). Multilabel tasks record these two instead of an ambiguous
  ``accuracy`` (which, called directly on multilabel targets, is the exact match, as before).

Multilabel ``roc_auc`` is the mean over a *fixed label set*: the labels whose known entries hold both classes
on the data given (unit weights). On a weighted resample a label of that set that loses one side makes the
value undefined (NaN), never a mean over fewer labels; the resampling of :mod:`.bootstrap` is stratified on
the rare labels (:meth:`Prepared.strata`), so a label with few positives cannot lose them.

Bootstrap resamples weight row ``i`` by ``W[b, i]``; each label then uses the weights ``W[b, i] * known[i, j]``
(unknown entries are simply not in that label's confusion cells or AUC sort order). With no ``-1`` all of
this reduces to the ordinary definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from fmprobe.errors import FmprobeError
from fmprobe.metrics.calibration import N_BINS, bin_index, top_class
from fmprobe.registry import Registry
from fmprobe.tasks import MISSING, TASK_TYPES

if TYPE_CHECKING:  # pragma: no cover
    import scipy.sparse as sp

# A multilabel label with fewer known positives (or negatives) than this is *rare*: bootstrap resamples are
# stratified on it. A plain resample loses all m entries of one side with probability ~e^-m: ~37% for m = 1,
# 1 in 22,000 for m = 10 (such a resample is then undefined, counted, never averaged over fewer labels).
RARE_SIDE = 10


class MetricUndefined(FmprobeError):
    """The metric has no value on these inputs (e.g. ROC-AUC with one class); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MetricInputError(FmprobeError, ValueError):
    """``y_true`` / ``y_score`` have shapes or values that do not follow the conventions above."""


class Prepared:
    """Validated ``(y_true, y_score)`` plus derived arrays (predictions, sort orders) cached across resamples."""

    def __init__(self, y_true: object, y_score: object, y_pred: object | None = None) -> None:
        """``y_pred`` (single-label only): the predicted classes when they are not the argmax of ``y_score``
        (an ordinal probe's decoded grades); the label metrics use it, the AUC keeps using the scores."""
        y = np.asarray(y_true)
        s = np.asarray(y_score, dtype=np.float64)
        if y.ndim not in (1, 2):
            raise MetricInputError(f"y_true must be 1-D class indices or 2-D 0/1 labels, got shape {y.shape}")
        if y.shape[0] == 0:
            raise MetricUndefined("no samples (y_true is empty)")
        if not np.all(np.isfinite(s)):
            raise MetricInputError("y_score contains NaN or infinite values")
        self.multilabel = y.ndim == 2
        if self.multilabel:
            if s.shape != y.shape:
                raise MetricInputError(
                    f"multilabel y_true has shape {y.shape} but y_score has shape {s.shape}; they must match"
                )
            valid = np.isin(y, (0, 1, MISSING))
            if not valid.all():
                raise MetricInputError(
                    f"multilabel y_true must contain only 0, 1 and {MISSING} (missing); "
                    f"found {np.unique(y[~valid]).tolist()[:10]}"
                )
            self.y = y.astype(np.int64)
            if y_pred is not None:
                raise MetricInputError("y_pred is for single-label tasks; multilabel predictions are y_score > 0.5")
            self.known = self.y != MISSING
            self.pred = (s > 0.5).astype(np.int64)
        else:
            if s.ndim == 1:  # positive-class probability of a binary task
                s = np.stack([1.0 - s, s], axis=1)
            if s.ndim != 2 or s.shape[0] != y.shape[0] or s.shape[1] < 2:
                raise MetricInputError(
                    f"y_true has {y.shape[0]} samples; y_score must be [N, C] with C >= 2, got shape {s.shape}"
                )
            if y.dtype.kind not in "iub" and not np.all(np.mod(y, 1) == 0):
                raise MetricInputError("y_true must hold integer class indices 0..C-1")
            self.y = y.astype(np.int64)
            if (self.y == MISSING).any():
                raise MetricInputError(
                    f"y_true contains {MISSING} in {int((self.y == MISSING).sum())} of {len(self.y)} samples; "
                    f"{MISSING} marks a missing label, which only multilabel targets [N, L] may hold. "
                    "Drop those samples or give them a class 0..C-1"
                )
            if self.y.min() < 0 or self.y.max() >= s.shape[1]:
                raise MetricInputError(
                    f"y_true holds classes {self.y.min()}..{self.y.max()} but y_score has {s.shape[1]} columns"
                )
            self.pred = s.argmax(axis=1) if y_pred is None else _checked_predictions(y_pred, self.y.shape, s.shape[1])
            self.known = None
        self.score = s
        self.n = y.shape[0]
        self.k = s.shape[1]  # classes (single-label) or labels (multilabel)
        self.has_missing = self.multilabel and not self.known.all()

    @property
    def task_kind(self) -> str:
        if self.multilabel:
            return "multilabel"
        return "binary" if self.k == 2 else "multiclass"

    def strata(self) -> np.ndarray | None:
        """Stratum of each sample for stratified resampling: its class (single-label), or (multilabel) its values
        on the *rare* labels, those evaluable ones with fewer than :data:`RARE_SIDE` known positives or negatives.

        Rows are resampled whole, so the labels' correlation stays in the resamples, and within strata, so every
        rare label keeps its positive and negative counts: its AUC is defined on every resample. None (plain
        resampling) when no label is rare."""
        if not self.multilabel:
            return self.y
        pos, neg = self._sides
        rare = np.flatnonzero((np.minimum(pos, neg) < RARE_SIDE) & (pos > 0) & (neg > 0))
        if len(rare) == 0:
            return None
        return np.unique(self.y[:, rare], axis=0, return_inverse=True)[1].ravel()

    @cached_property
    def _sides(self) -> tuple[np.ndarray, np.ndarray]:
        """Multilabel: known positives and known negatives per label."""
        return ((self.y == 1) & self.known).sum(axis=0), ((self.y == 0) & self.known).sum(axis=0)

    @cached_property
    def evaluable_labels(self) -> np.ndarray:
        """Multilabel: the labels whose known entries hold a positive and a negative (the fixed AUC label set)."""
        pos, neg = self._sides
        return np.flatnonzero((pos > 0) & (neg > 0))

    def label_reason(self, j: int) -> str | None:
        """Why label ``j``'s AUC is undefined on the data given (None: it is defined)."""
        known = int(self.known[:, j].sum())
        if known == 0:
            return "no known entry (every entry is missing)"
        pos = int((self.y[self.known[:, j], j] == 1).sum())
        if pos == 0 or pos == known:
            return f"no {'positive' if pos == 0 else 'negative'} among its {known} known entries"
        return None

    @cached_property
    def _confusion_codes(self) -> sp.csr_matrix:
        """Sparse one-hot ``[N, cells]``: which confusion-matrix cell(s) each sample falls in."""
        if self.multilabel:  # one 2x2 table per label: cell = label*4 + true*2 + pred; missing entries in none
            rows, labels = np.nonzero(self.known)
            cols = labels * 4 + self.y[rows, labels] * 2 + self.pred[rows, labels]
            shape = (self.n, self.k * 4)
        else:
            cols = self.y * self.k + self.pred
            rows = np.arange(self.n)
            shape = (self.n, self.k * self.k)
        import scipy.sparse as sp  # here, not at import: the CLI reads fmprobe.metrics' defaults on every start

        return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=shape)

    def confusion(self, W: np.ndarray) -> np.ndarray:
        """Weighted confusion matrices: ``[B, C, C]`` (rows = truth) or ``[B, L, 2, 2]`` for multilabel."""
        cells = np.asarray((self._confusion_codes.T @ W.T).T)
        if self.multilabel:
            return cells.reshape(W.shape[0], self.k, 2, 2)
        return cells.reshape(W.shape[0], self.k, self.k)

    @cached_property
    def _calibration_codes(self) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
        """Sparse ``[N, cells]`` maps of each entry to its confidence bin (multilabel: ``label * N_BINS + bin``,
        missing entries in none), holding 1, the entry's correctness and its confidence: the ECE's bin sums."""
        conf, correct = top_class(self.y, self.score)
        if self.multilabel:
            rows, labels = np.nonzero(self.known)
            cols = labels * N_BINS + bin_index(conf[rows, labels])
            conf, correct = conf[rows, labels], correct[rows, labels]
        else:
            rows, cols = np.arange(self.n), bin_index(conf)
        shape = (self.n, self.k * N_BINS if self.multilabel else N_BINS)
        import scipy.sparse as sp

        return tuple(
            sp.csr_matrix((np.asarray(data, dtype=np.float64), (rows, cols)), shape=shape)
            for data in (np.ones(len(rows)), correct, conf)
        )

    @cached_property
    def auc_columns(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per score column: (sort order, is-positive in that order, start of each tie group).

        A multilabel column's order lists only the rows where that label is known, so missing entries
        carry no weight in its AUC.
        """
        out = []
        for col in range(self.k) if (self.multilabel or self.k > 2) else [1]:
            pos = self.y[:, col] == 1 if self.multilabel else self.y == col
            if self.has_missing:
                rows = np.flatnonzero(self.known[:, col])
                order = rows[np.argsort(self.score[rows, col], kind="stable")]
            else:
                order = np.argsort(self.score[:, col], kind="stable")
            s = self.score[order, col]
            starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
            out.append((order, pos[order], starts))
        return out


def _checked_predictions(y_pred: object, shape: tuple[int, ...], n_classes: int) -> np.ndarray:
    """Predicted class indices: one per sample, each in ``0..n_classes-1``."""
    pred = np.asarray(y_pred)
    if pred.shape != shape or pred.dtype.kind not in "iu" or (len(pred) and (pred.min() < 0 or pred.max() >= n_classes)):
        raise MetricInputError(
            f"y_pred must hold one class index 0..{n_classes - 1} per sample (shape {shape}), got {pred.dtype} "
            f"shape {pred.shape}"
        )
    return pred.astype(np.int64)


def _mean_defined(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over the finite entries (NaN marks a skipped class/label); NaN when none is finite."""
    ok = np.isfinite(values)
    count = ok.sum(axis=axis)
    total = np.where(ok, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


# --------------------------------------------------------------------------- batched metric kernels
# Each kernel maps (Prepared, W [B, N]) -> values [B], NaN where the metric is undefined on that resample.


def _accuracy(p: Prepared, W: np.ndarray) -> np.ndarray:
    if not p.multilabel:
        return _safe_div(W @ (p.pred == p.y).astype(np.float64), W.sum(axis=1))
    return _subset_accuracy(p, W)


def _subset_accuracy(p: Prepared, W: np.ndarray) -> np.ndarray:
    if not p.multilabel:
        return np.full(W.shape[0], np.nan)
    # exact match on the known entries; rows without any known entry are not counted
    counted = p.known.any(axis=1)
    correct = ((p.pred == p.y) | ~p.known).all(axis=1) & counted
    return _safe_div(W @ correct.astype(np.float64), W @ counted.astype(np.float64))


def _label_accuracy(p: Prepared, W: np.ndarray) -> np.ndarray:
    if not p.multilabel:
        return np.full(W.shape[0], np.nan)
    cm = p.confusion(W)  # [B, L, 2, 2] over each label's known rows
    return _mean_defined(_safe_div(cm[..., 0, 0] + cm[..., 1, 1], cm.sum(axis=(-2, -1))))


def _recalls(cm: np.ndarray) -> np.ndarray:
    """Per-class recall from confusion matrices ``[..., C, C]``; NaN for classes absent from the truth."""
    return _safe_div(np.diagonal(cm, axis1=-2, axis2=-1), cm.sum(axis=-1))


def _balanced_accuracy(p: Prepared, W: np.ndarray) -> np.ndarray:
    cm = p.confusion(W)
    per = _mean_defined(_recalls(cm))  # [B] or [B, L]
    return _mean_defined(per) if p.multilabel else per


def _macro_f1(p: Prepared, W: np.ndarray) -> np.ndarray:
    cm = p.confusion(W)
    if p.multilabel:  # F1 of the positive class of each label
        tp, fp, fn = cm[..., 1, 1], cm[..., 0, 1], cm[..., 1, 0]
    else:
        tp = np.diagonal(cm, axis1=-2, axis2=-1)
        fp, fn = cm.sum(axis=-2) - tp, cm.sum(axis=-1) - tp
    # classes/labels absent from both truth and prediction have no F1 and are left out of the mean
    return _mean_defined(_safe_div(2 * tp, 2 * tp + fp + fn))


def _quadratic_kappa(p: Prepared, W: np.ndarray) -> np.ndarray:
    if p.multilabel:
        return np.full(W.shape[0], np.nan)
    cm = p.confusion(W)
    idx = np.arange(p.k, dtype=np.float64)
    w = (idx[:, None] - idx[None, :]) ** 2  # distances between class *indices* 0..C-1, absent classes included
    n = cm.sum(axis=(1, 2))
    observed = np.einsum("bij,ij->b", cm, w)
    expected = _safe_div(np.einsum("bi,ij,bj->b", cm.sum(axis=2), w, cm.sum(axis=1)), n)
    return 1.0 - _safe_div(observed, expected)


def _ece(p: Prepared, W: np.ndarray) -> np.ndarray:
    """Expected calibration error (:mod:`.calibration`): per bin |sum correct - sum confidence| over the weight."""
    count, correct, conf = (np.asarray((codes.T @ W.T).T) for codes in p._calibration_codes)
    if not p.multilabel:
        return _safe_div(np.abs(correct - conf).sum(axis=1), count.sum(axis=1))
    shape = (W.shape[0], p.k, N_BINS)  # per label: its bins' gaps over its known weight; mean over scored labels
    gaps = np.abs(correct - conf).reshape(shape).sum(axis=2)
    return _mean_defined(_safe_div(gaps, count.reshape(shape).sum(axis=2)))


def _auc_weighted(order: np.ndarray, pos: np.ndarray, starts: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC for every row of weights: P(score_pos > score_neg) + 0.5 P(tie).

    ``order`` sorts the scores ascending, ``pos`` flags positives in that order and ``starts`` marks the
    first position of each run of tied scores.
    """
    if len(order) == 0:  # a multilabel column with no known entry
        return np.full(W.shape[0], np.nan)
    Ws = W[:, order]
    neg = Ws * ~pos
    cum = np.cumsum(neg, axis=1)  # negative weight at or below each position
    wpos = Ws[:, pos]
    if len(starts) == len(order):  # no ties: a positive's own position adds no negative weight
        below = cum[:, pos]
    else:  # credit each positive with the negatives below its tie group plus half of those tied with it
        sizes = np.diff(np.r_[starts, len(order)])
        group = np.repeat(np.arange(len(starts)), sizes)
        before = cum[:, starts] - neg[:, starts]
        tied = cum[:, starts + sizes - 1] - before
        below = (before + 0.5 * tied)[:, group[pos]]
    num = np.einsum("bi,bi->b", wpos, below)
    return _safe_div(num, wpos.sum(axis=1) * cum[:, -1])


def label_aucs(p: Prepared, W: np.ndarray) -> np.ndarray:
    """Multilabel: each label's AUC on its known rows, ``[B, L]`` (NaN where a label has one side only)."""
    W = np.atleast_2d(np.asarray(W, dtype=np.float64))
    return np.stack([_auc_weighted(order, pos, starts, W) for order, pos, starts in p.auc_columns], axis=1)


def mean_over(per: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean of ``per`` ``[B, L]`` over a fixed set of label columns: NaN where any of them is NaN (or none)."""
    if len(labels) == 0:
        return np.full(per.shape[0], np.nan)
    return per[:, labels].mean(axis=1)


def _roc_auc(p: Prepared, W: np.ndarray) -> np.ndarray:
    if p.multilabel:  # the mean over the labels evaluable on the data given, the same set on every resample
        return mean_over(label_aucs(p, W), p.evaluable_labels)
    per = np.stack([_auc_weighted(o, pos, st, W) for o, pos, st in p.auc_columns], axis=1)
    # binary: one column; multiclass: one-vs-rest per class. Classes with one side only skipped.
    return _mean_defined(per)


# --------------------------------------------------------------------------- reasons for undefined values


def _present(p: Prepared) -> np.ndarray:
    return np.unique(p.y)


def _all_missing_reason(p: Prepared) -> str | None:
    if p.multilabel and not p.known.any():
        return f"every y_true entry is missing ({MISSING}), so no label can be scored"
    return None


def _auc_reason(p: Prepared) -> str:
    if p.multilabel:
        if (reason := _all_missing_reason(p)) is not None:
            return f"ROC-AUC is undefined: {reason}"
        where = "among its known (non-missing) entries" if p.has_missing else "in y_true"
        return f"ROC-AUC is undefined: every label has only one class (all 0 or all 1) {where}"
    return (
        f"ROC-AUC is undefined: y_true contains only class {_present(p).tolist()} of {p.k}; "
        "it needs positive and negative samples"
    )


def _kappa_reason(p: Prepared) -> str:
    if p.multilabel:
        return "quadratic kappa is not defined for multilabel targets"
    return (
        "quadratic kappa is undefined: y_true and the predictions are the same single class "
        f"({_present(p).tolist()}), so there is no expected disagreement"
    )


def _f1_reason(p: Prepared) -> str:
    if (reason := _all_missing_reason(p)) is not None:
        return f"macro-F1 is undefined: {reason}"
    return "macro-F1 is undefined: no class/label occurs in y_true or in the predictions"


def _multilabel_reason(p: Prepared) -> str:
    if not p.multilabel:
        return "this metric is for multilabel targets; single-label tasks record accuracy"
    return _generic_reason(p)


def _generic_reason(p: Prepared) -> str:
    if (reason := _all_missing_reason(p)) is not None:
        return f"the metric is undefined: {reason}"
    return "the metric is undefined on these labels"


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Metric:
    """A named metric: ``metric(y_true, y_score) -> float``; ``batch`` evaluates weighted resamples."""

    name: str
    kernel: Callable[[Prepared, np.ndarray], np.ndarray]
    why_undefined: Callable[[Prepared], str]
    description: str
    higher_is_better: bool = True
    tasks: tuple[str, ...] = TASK_TYPES  # the task types compute_all records it for

    def applies_to(self, task: str) -> bool:
        return task in self.tasks

    def batch(self, p: Prepared, W: np.ndarray) -> np.ndarray:
        """Values for each row of sample weights ``W`` ``[B, N]``; NaN where undefined."""
        return self.kernel(p, np.atleast_2d(np.asarray(W, dtype=np.float64)))

    def evaluate(self, p: Prepared) -> float:
        value = float(self.batch(p, np.ones((1, p.n)))[0])
        if not np.isfinite(value):
            raise MetricUndefined(self.why_undefined(p))
        return value

    def __call__(self, y_true: object, y_score: object) -> float:
        return self.evaluate(Prepared(y_true, y_score))


METRICS: Registry[Metric] = Registry("metric")  # an unknown name lists the close (or all) registered ones


def _register(metric: Metric) -> Metric:
    return METRICS.add(metric.name, metric)


accuracy = _register(
    Metric(
        "accuracy",
        _accuracy,
        _generic_reason,
        "fraction of right predictions (single-label tasks; on multilabel targets the exact match, see "
        "subset_accuracy)",
        tasks=("binary", "multiclass", "ordinal"),
    )
)
subset_accuracy = _register(
    Metric(
        "subset_accuracy",
        _subset_accuracy,
        _multilabel_reason,
        "multilabel exact match: fraction of rows with every known label right (rows with none known skipped)",
        tasks=("multilabel",),
    )
)
label_accuracy = _register(
    Metric(
        "label_accuracy",
        _label_accuracy,
        _multilabel_reason,
        "multilabel: mean over labels of each label's accuracy on its known rows (MedMNIST's ACC)",
        tasks=("multilabel",),
    )
)
balanced_accuracy = _register(
    Metric(
        "balanced_accuracy",
        _balanced_accuracy,
        _generic_reason,
        "mean recall over classes present in y_true (multilabel: mean over labels of binary balanced accuracy "
        "on the rows where the label is known)",
    )
)
macro_f1 = _register(
    Metric(
        "macro_f1",
        _macro_f1,
        _f1_reason,
        "unweighted mean F1 over classes (multilabel: positive-class F1 per label on its known rows); "
        "classes absent from truth and prediction are skipped",
    )
)
roc_auc = _register(
    Metric(
        "roc_auc",
        _roc_auc,
        _auc_reason,
        "binary: positive-class AUC; multiclass: macro one-vs-rest (classes with one side only skipped); "
        "multilabel: mean over the labels whose known rows hold both classes, each on the rows where it is known",
    )
)
quadratic_kappa = _register(
    Metric(
        "quadratic_kappa",
        _quadratic_kappa,
        _kappa_reason,
        "Cohen's kappa with quadratic weights over class indices (ordinal agreement)",
    )
)

ece = _register(
    Metric(
        "ece",
        _ece,
        _generic_reason,
        f"expected calibration error, {N_BINS} equal-width bins of the top-class confidence (multilabel: mean over "
        "labels of each label's binary ECE on its known entries); lower is better, see fmprobe.metrics.calibration",
        higher_is_better=False,
    )
)


def get_metric(metric: str | Metric) -> Metric:
    """A metric by name (close matches suggested on a typo) or the metric itself."""
    return metric if isinstance(metric, Metric) else METRICS.get(metric)


def infer_task(y_true: object, n_classes: int | None = None) -> str:
    """'multilabel' for 2-D targets, 'binary' for two classes, else 'multiclass' ('ordinal' is never inferred)."""
    y = np.asarray(y_true)
    if y.ndim == 2:
        return "multilabel"
    n = n_classes if n_classes is not None else len(np.unique(y))
    return "binary" if n <= 2 else "multiclass"


def check_task(task: str, p: Prepared) -> None:
    """Raise when ``task`` contradicts the shapes of the inputs."""
    if task not in TASK_TYPES:
        raise MetricInputError(f"unknown task {task!r}; expected one of {', '.join(TASK_TYPES)}")
    if (task == "multilabel") != p.multilabel:
        raise MetricInputError(
            f"task {task!r} does not match y_true: "
            + ("2-D labels mean multilabel" if p.multilabel else "multilabel needs 2-D 0/1/-1 labels [N, L]")
        )
    if task == "binary" and p.k != 2:
        raise MetricInputError(f"task 'binary' needs y_score with 2 columns, got {p.k}")

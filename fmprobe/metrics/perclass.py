"""Per-class metrics of a single-label task and the binary decision threshold chosen on validation.

:func:`per_class` gives, for every class, recall (sensitivity), precision, F1 and one-vs-rest ROC-AUC, each with a
bootstrap CI from the same class-stratified resamples as every other interval (:mod:`.bootstrap`); a value that
cannot be computed is None with the reason ("no test sample of this class", "never predicted"). The label metrics
use the predicted classes :class:`~.functions.Prepared` uses (argmax, or an ordinal cell's decoded grades), the
AUC the scores.

:func:`youden_threshold` picks the cut on a binary task's positive-class score that maximises Youden's J
(sensitivity + specificity - 1) on *validation* predictions; the report shows the test confusion matrix at it,
which for an imbalanced task says more than the argmax (0.5) cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmprobe.metrics.bootstrap import CI_LEVEL, MAX_UNDEFINED, drop_undefined, percentile_interval, replicate_each
from fmprobe.metrics.functions import MetricInputError, MetricUndefined, Prepared, _auc_weighted, _safe_div

CLASS_METRICS = ("recall", "precision", "f1", "roc_auc")


@dataclass(frozen=True)
class ClassValue:
    """One class's metric: the value with its CI, or None with the reason it is undefined."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class ClassRow:
    """One class: its name, test support (true samples), predicted count, and :data:`CLASS_METRICS` values."""

    name: str
    support: int
    predicted: int
    values: dict[str, ClassValue]


def _class_kernels(p: Prepared, W: np.ndarray) -> np.ndarray:
    """``[B, 4, C]``: recall, precision, F1 and one-vs-rest AUC of every class on each resample (NaN: undefined)."""
    cm = p.confusion(W)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    truth, predicted = cm.sum(axis=-1), cm.sum(axis=-2)
    if p.k == 2:  # one score column: class 1's AUC, class 0's is the same ranking seen from the other side
        auc1 = _auc_weighted(*p.auc_columns[0], W)
        auc = np.stack([auc1, auc1], axis=1)
    else:
        auc = np.stack([_auc_weighted(*col, W) for col in p.auc_columns], axis=1)
    return np.stack([_safe_div(tp, truth), _safe_div(tp, predicted), _safe_div(2 * tp, truth + predicted), auc], axis=1)


def _reasons(support: int, predicted: int, n: int) -> dict[str, str]:
    absent = "no test sample of this class"
    return {
        "recall": absent if support == 0 else "",
        "precision": "never predicted" if predicted == 0 else "",
        "f1": "not in the test truth and never predicted" if support == 0 and predicted == 0 else "",
        "roc_auc": absent if support == 0 else ("every test sample is of this class" if support == n else ""),
    }


def per_class(
    y_true: object,
    y_score: object,
    class_names: Sequence[str] | None = None,
    *,
    y_pred: object | None = None,
    n_resamples: int = 0,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> list[ClassRow]:
    """Per class of a single-label task: recall, precision, F1, one-vs-rest AUC (with CIs when ``n_resamples``)."""
    p = Prepared(y_true, y_score, y_pred)
    if p.multilabel:
        raise MetricInputError("per_class is for single-label targets; multilabel tasks record roc_auc[<label>] rows")
    names = [str(c) for c in class_names] if class_names is not None else [str(c) for c in range(p.k)]
    if len(names) != p.k:
        raise MetricInputError(f"{len(names)} class names for {p.k} score columns; give one name per class")
    point = _class_kernels(p, np.ones((1, p.n)))[0]  # [4, C]
    reps = (
        replicate_each([lambda W: _class_kernels(p, W)], p.n, p.strata(), n_resamples, seed)[0] if n_resamples else None
    )
    cm = p.confusion(np.ones((1, p.n)))[0]
    rows = []
    for c, name in enumerate(names):
        support, predicted = int(cm[c].sum()), int(cm[:, c].sum())
        reasons = _reasons(support, predicted, p.n)
        values = {}
        for i, metric in enumerate(CLASS_METRICS):
            if reasons[metric] or not np.isfinite(point[i, c]):
                values[metric] = ClassValue(None, reason=reasons[metric] or "undefined on the test set")
                continue
            low = high = None
            if reps is not None:
                low, high = _interval(reps[:, i, c], level)
            values[metric] = ClassValue(float(point[i, c]), low, high)
        rows.append(ClassRow(name, support, predicted, values))
    return rows


def _interval(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    """Percentile interval of the finite replicates; none when too many are undefined (e.g. a precision whose
    class is sometimes never predicted), as for every other interval."""
    try:
        return percentile_interval(drop_undefined(values, "a per-class value", MAX_UNDEFINED), level)
    except MetricUndefined:
        return None, None


def youden_threshold(y_true: object, positive_score: object) -> float:
    """The positive-class score ``t`` maximising Youden's J = TPR - FPR for the rule "positive when score >= t".

    Candidates are the observed scores (scikit-learn's ``roc_curve`` thresholds); among equal J the highest
    threshold wins (the first maximum of ``argmax(tpr - fpr)``), so the choice is deterministic. Raises
    :class:`MetricUndefined` when the validation labels hold one class only."""
    y = np.asarray(y_true).astype(np.int64).ravel()
    s = np.asarray(positive_score, dtype=np.float64).ravel()
    if y.shape != s.shape or not np.isin(y, (0, 1)).all():
        raise MetricInputError(f"youden_threshold needs 0/1 labels and one score per label, got {y.shape}, {s.shape}")
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise MetricUndefined(
            f"no Youden threshold: the validation labels hold only class {int(y[0]) if len(y) else '-'}"
        )
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), len(s) - 1]  # end of each tie group, high to low
    tpr = np.cumsum(y_sorted)[last] / n_pos
    fpr = np.cumsum(1 - y_sorted)[last] / n_neg
    return float(s_sorted[last][int(np.argmax(tpr - fpr))])

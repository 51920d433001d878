"""All metrics of a task at once, as values-or-reasons (what the results table stores).

Only the metrics that apply to the task are recorded (:attr:`Metric.tasks`): single-label tasks get
``accuracy``, multilabel tasks ``subset_accuracy`` and ``label_accuracy`` instead. Multilabel tasks also get one
``roc_auc[<label>]`` row per label (missing, with the reason, when the label's known entries hold one class only)
and one ``roc_auc[<set>]`` per named label subset (``label_sets``, e.g. CheXpert's ``competition`` labels). Every
mean over labels is over a fixed set, the labels evaluable on the data given, named in the value's ``detail``
(``13 of 14 labels (not evaluable: Fracture: no positive)``); the bootstrap keeps that set on every resample
(whole rows resampled, stratified on the rare labels, see :mod:`.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from fmprobe.metrics.bootstrap import (
    CI_LEVEL,
    MAX_UNDEFINED,
    Batched,
    drop_undefined,
    percentile_interval,
    replicate_each,
)
from fmprobe.metrics.functions import (
    METRICS,
    MetricInputError,
    MetricUndefined,
    Prepared,
    check_task,
    label_aucs,
    mean_over,
)


@dataclass(frozen=True)
class MetricValue:
    """A metric's value, or None with the reason it is missing; CI fields are set when CIs were asked for."""

    value: float | None
    reason: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_reason: str | None = None
    n_undefined: int = 0
    detail: str = ""  # what the value is computed over when that is not the whole test set (e.g. "13 of 14 labels")

    @property
    def ok(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class _Entry:
    """One row to record: its point value (or reason) and, when it has a value, how to evaluate resamples."""

    name: str
    value: MetricValue
    batched: Batched | None = None


class _LabelBlock:
    """Per-label AUCs of the current resample block, computed once for all the rows that read them."""

    def __init__(self, p: Prepared) -> None:
        self.p = p
        self._block: np.ndarray | None = None
        self._values = np.empty((0, p.k))

    def __call__(self, W: np.ndarray) -> np.ndarray:
        if self._block is not W:
            self._block, self._values = W, label_aucs(self.p, W)
        return self._values


def set_detail(p: Prepared, names: Sequence[str], labels: Sequence[int]) -> str:
    """``"13 of 14 labels (not evaluable: Fracture: no positive)"``: the fixed set a mean over labels is over."""
    evaluable = set(p.evaluable_labels.tolist())
    out = [f"{names[j]}: {p.label_reason(j).split(' among')[0]}" for j in labels if j not in evaluable]
    text = f"{len(labels) - len(out)} of {len(labels)} labels"
    return f"{text} (not evaluable: {'; '.join(out)})" if out else text


def _label_set_entries(
    p: Prepared, block: _LabelBlock, names: list[str], label_sets: Mapping[str, Sequence[str]]
) -> list[_Entry]:
    entries = []
    for set_name, members in label_sets.items():
        unknown = [m for m in members if m not in names]
        if unknown or not members:
            raise MetricInputError(
                f"label set {set_name!r} "
                + (f"names unknown label(s) {unknown}; the labels are {names}" if unknown else "is empty")
            )
        if set_name in names:
            raise MetricInputError(f"label set {set_name!r} has the name of a label; give the set another name")
        labels = [names.index(m) for m in members]
        fixed = np.array([j for j in labels if j in set(p.evaluable_labels.tolist())], dtype=np.int64)
        detail = set_detail(p, names, labels)
        name = f"roc_auc[{set_name}]"
        if len(fixed) == 0:
            entries.append(_Entry(name, MetricValue(None, f"ROC-AUC is undefined: {detail}", detail=detail)))
            continue
        value = float(mean_over(block(np.ones((1, p.n))), fixed)[0])
        entries.append(_Entry(name, MetricValue(value, detail=detail), lambda W, f=fixed: mean_over(block(W), f)))
    return entries


def _label_entries(
    p: Prepared, label_names: Sequence[str] | None, label_sets: Mapping[str, Sequence[str]] | None
) -> list[_Entry]:
    """``roc_auc`` over the fixed label set, one ``roc_auc[<label>]`` per label, one ``roc_auc[<set>]`` per set."""
    names = [str(n) for n in label_names] if label_names is not None else [str(j) for j in range(p.k)]
    if len(names) != p.k:
        raise MetricInputError(f"{len(names)} label names for {p.k} labels; give one name per y_true column")
    block = _LabelBlock(p)
    point = block(np.ones((1, p.n)))[0]
    detail = set_detail(p, names, range(p.k))
    fixed = p.evaluable_labels
    try:
        mean = MetricValue(METRICS.get("roc_auc").evaluate(p), detail=detail)
    except MetricUndefined as e:
        mean = MetricValue(None, e.reason, detail=detail)
    entries = [_Entry("roc_auc", mean, (lambda W: mean_over(block(W), fixed)) if mean.ok else None)]
    for j, label in enumerate(names):
        reason = p.label_reason(j)
        if reason is not None:
            entries.append(_Entry(f"roc_auc[{label}]", MetricValue(None, f"ROC-AUC is undefined: {reason}")))
        else:
            entries.append(_Entry(f"roc_auc[{label}]", MetricValue(float(point[j])), lambda W, j=j: block(W)[:, j]))
    return entries + _label_set_entries(p, block, names, label_sets or {})


def _registered_entries(p: Prepared, names: Sequence[str]) -> list[_Entry]:
    entries = []
    for name in names:
        m = METRICS.get(name)
        try:
            entries.append(_Entry(name, MetricValue(m.evaluate(p)), lambda W, m=m: m.batch(p, W)))
        except MetricUndefined as e:
            entries.append(_Entry(name, MetricValue(None, e.reason)))
    return entries


def _with_ci(value: MetricValue, values: np.ndarray, name: str, level: float, max_undefined: float) -> MetricValue:
    try:
        valid = drop_undefined(values, name, max_undefined)
    except MetricUndefined as e:
        return replace(value, ci_reason=e.reason, n_undefined=int((~np.isfinite(values)).sum()))
    low, high = percentile_interval(valid, level)
    return replace(value, ci_low=low, ci_high=high, n_undefined=len(values) - len(valid))


def compute_all(
    y_true: object,
    y_score: object,
    task: str,
    *,
    metrics: Sequence[str] | None = None,
    n_resamples: int = 0,
    seed: int = 0,
    level: float = CI_LEVEL,
    max_undefined: float = MAX_UNDEFINED,
    y_pred: object | None = None,
    label_names: Sequence[str] | None = None,
    label_sets: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, MetricValue]:
    """Every registered metric that applies to ``task`` (or ``metrics``); with ``n_resamples > 0`` also
    bootstrap CIs.

    All metrics share the same resamples, so their intervals are computed in one pass. ``y_pred`` gives the
    predicted classes when they are not the argmax of ``y_score`` (see :class:`Prepared`). Multilabel only:
    ``label_names`` (one per column; default the column indices) name the per-label rows, ``label_sets``
    (set name -> label names) add a mean AUC row per subset; both come with ``roc_auc``.
    """
    p = Prepared(y_true, y_score, y_pred)
    check_task(task, p)
    names = list(metrics) if metrics is not None else [n for n in METRICS if METRICS.get(n).applies_to(task)]
    entries = _registered_entries(p, [n for n in names if not (p.multilabel and n == "roc_auc")])
    if p.multilabel and "roc_auc" in names:
        entries += _label_entries(p, label_names, label_sets)
    order = {n: i for i, n in enumerate(names)}  # registered metrics keep the asked order, label rows follow
    entries.sort(key=lambda e: order.get(e.name, len(order)))
    out = {e.name: e.value for e in entries}
    live = [e for e in entries if e.batched is not None]
    if n_resamples > 0 and live:
        reps = replicate_each([e.batched for e in live], p.n, p.strata(), n_resamples, seed)
        for e, values in zip(live, reps, strict=True):
            out[e.name] = _with_ci(e.value, values, e.name, level, max_undefined)
    return out

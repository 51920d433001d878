"""All metrics of a task at once, as values-or-reasons (what the results table stores)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fmprobe.metrics.bootstrap import CI_LEVEL, MAX_UNDEFINED, drop_undefined, percentile_interval, replicate
from fmprobe.metrics.functions import METRICS, MetricUndefined, Prepared, check_task


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
) -> dict[str, MetricValue]:
    """Every registered metric (or ``metrics``) for ``task``; with ``n_resamples > 0`` also bootstrap CIs.

    All metrics share the same resamples, so their intervals are computed in one pass. ``y_pred`` gives the
    predicted classes when they are not the argmax of ``y_score`` (see :class:`Prepared`).
    """
    p = Prepared(y_true, y_score, y_pred)
    check_task(task, p)
    names = list(metrics) if metrics is not None else list(METRICS)
    out: dict[str, MetricValue] = {}
    defined = []
    for name in names:
        m = METRICS.get(name)
        try:
            out[name] = MetricValue(m.evaluate(p))
            defined.append(m)
        except MetricUndefined as e:
            out[name] = MetricValue(None, e.reason)
    if n_resamples > 0 and defined:
        reps = replicate([lambda W, m=m: m.batch(p, W) for m in defined], p.n, p.strata(), n_resamples, seed)
        for m, values in zip(defined, reps, strict=True):
            value = out[m.name].value
            try:
                valid = drop_undefined(values, m.name, max_undefined)
            except MetricUndefined as e:
                out[m.name] = MetricValue(value, ci_reason=e.reason, n_undefined=int((~np.isfinite(values)).sum()))
                continue
            low, high = percentile_interval(valid, level)
            out[m.name] = MetricValue(value, None, low, high, None, n_resamples - len(valid))
    return out

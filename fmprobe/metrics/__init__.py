"""Metrics as plain functions of arrays (no torch), bootstrap CIs and paired comparisons.

``metric(y_true, y_score) -> float`` for every name in :data:`METRICS`; see :mod:`.functions` for the
label/score conventions and :mod:`.bootstrap` for how intervals and p-values are computed.
"""

from __future__ import annotations

from fmprobe.metrics.bootstrap import (
    ConfidenceInterval,
    PairedComparison,
    bootstrap_ci,
    bootstrap_p_value,
    paired_bootstrap,
    resample_weights,
)
from fmprobe.metrics.evaluate import MetricValue, compute_all
from fmprobe.metrics.functions import (
    METRICS,
    MISSING,
    PRIMARY_METRIC,
    TASKS,
    Metric,
    MetricInputError,
    MetricUndefined,
    Prepared,
    accuracy,
    balanced_accuracy,
    check_task,
    get_metric,
    infer_task,
    macro_f1,
    quadratic_kappa,
    roc_auc,
)

__all__ = [
    "METRICS",
    "MISSING",
    "PRIMARY_METRIC",
    "TASKS",
    "ConfidenceInterval",
    "Metric",
    "MetricInputError",
    "MetricUndefined",
    "MetricValue",
    "PairedComparison",
    "Prepared",
    "accuracy",
    "balanced_accuracy",
    "bootstrap_ci",
    "bootstrap_p_value",
    "check_task",
    "compute_all",
    "get_metric",
    "infer_task",
    "macro_f1",
    "paired_bootstrap",
    "quadratic_kappa",
    "resample_weights",
    "roc_auc",
]

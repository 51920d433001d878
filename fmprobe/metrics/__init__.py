"""Metrics as plain functions of arrays (no torch), bootstrap CIs and paired comparisons.

``metric(y_true, y_score) -> float`` for every name in :data:`METRICS`; see :mod:`.functions` for the
label/score conventions and :mod:`.bootstrap` for how intervals and p-values are computed.

``MISSING``, ``PRIMARY_METRIC`` and ``TASKS`` (= :data:`fmprobe.tasks.TASK_TYPES`) are re-exported from
:mod:`fmprobe.tasks` for code written against the old names; new code imports them from there.
"""

from __future__ import annotations

from fmprobe.metrics.bootstrap import (
    CI_LEVEL,
    N_BOOTSTRAP,
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
    Metric,
    MetricInputError,
    MetricUndefined,
    Prepared,
    accuracy,
    balanced_accuracy,
    check_task,
    ece,
    get_metric,
    infer_task,
    label_accuracy,
    label_aucs,
    macro_f1,
    quadratic_kappa,
    roc_auc,
    subset_accuracy,
)
from fmprobe.tasks import MISSING, PRIMARY_METRIC
from fmprobe.tasks import TASK_TYPES as TASKS

__all__ = [
    "CI_LEVEL",
    "METRICS",
    "MISSING",
    "N_BOOTSTRAP",
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
    "ece",
    "get_metric",
    "infer_task",
    "label_accuracy",
    "label_aucs",
    "macro_f1",
    "paired_bootstrap",
    "quadratic_kappa",
    "resample_weights",
    "roc_auc",
    "subset_accuracy",
]

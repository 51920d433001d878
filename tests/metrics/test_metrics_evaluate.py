"""compute_all: every metric of a task as values-or-reasons, with bootstrap CIs from shared resamples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from fmprobe.metrics import (
    MetricInputError,
    compute_all,
)


def test_compute_all_values_reasons_and_cis() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((300, 3)) < 0.3).astype(int)
    y[:, 2] = 0  # a label without positives is skipped by AUC
    s = np.clip(y * 0.4 + rng.random((300, 3)) * 0.6, 0, 1)
    out = compute_all(y, s, "multilabel", n_resamples=300, seed=1)
    assert out["quadratic_kappa"].value is None and "multilabel" in out["quadratic_kappa"].reason
    auc = out["roc_auc"]
    assert auc.value == pytest.approx(np.mean([skm.roc_auc_score(y[:, j], s[:, j]) for j in (0, 1)]))
    assert auc.ci_low < auc.value < auc.ci_high and auc.reason is None
    for name in ("subset_accuracy", "label_accuracy", "balanced_accuracy", "macro_f1"):
        v = out[name]
        assert v.ci_low <= v.value <= v.ci_high, name
    with pytest.raises(MetricInputError, match="multilabel"):
        compute_all(y, s, "multiclass")
    with pytest.raises(MetricInputError, match="2 columns"):
        compute_all(np.array([0, 1, 2]), np.eye(3), "binary")

"""ece (expected calibration error), per-class metrics and the validation Youden threshold."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score, roc_curve

from fmprobe.metrics import METRICS, MetricUndefined, Prepared, compute_all, ece, get_metric
from fmprobe.metrics.calibration import N_BINS, bin_index, reliability, top_class
from fmprobe.metrics.perclass import per_class, youden_threshold


def _hand_ece(conf: np.ndarray, correct: np.ndarray) -> float:
    """Guo et al.'s ECE written out with a loop over 15 (lo, hi] bins."""
    total = 0.0
    for b in range(N_BINS):
        lo, hi = b / N_BINS, (b + 1) / N_BINS
        inside = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += inside.sum() / len(conf) * abs(correct[inside].mean() - conf[inside].mean())
    return total


def test_ece_equals_a_hand_computation() -> None:
    # top-class confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.7 (wrong): bins (0.867, 0.933] and
    # (0.533, 0.6], (0.667, 0.733]: ECE = 2/4 |0.5 - 0.9| + 1/4 |1 - 0.6| + 1/4 |0 - 0.7| = 0.2 + 0.1 + 0.175
    y = np.array([0, 1, 1, 0])
    s = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.3, 0.7]])
    assert ece(y, s) == pytest.approx(0.475)
    rng = np.random.default_rng(0)
    s = rng.dirichlet([0.5, 0.5, 0.5, 0.5], size=300)
    y = rng.integers(0, 4, 300)
    conf, correct = top_class(y, s)
    assert ece(y, s) == pytest.approx(_hand_ece(conf, correct))


def test_ece_bins_match_sklearn_calibration_curve() -> None:
    rng = np.random.default_rng(1)
    s = rng.dirichlet([1, 1, 1], size=400)
    y = rng.integers(0, 3, 400)
    conf, correct = top_class(y, s)
    r = reliability(conf, correct)
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=N_BINS)  # the same (lo, hi] uniform bins
    filled = r.count > 0
    np.testing.assert_allclose(r.accuracy[filled], prob_true)
    np.testing.assert_allclose(r.confidence[filled], prob_pred)
    assert r.ece == pytest.approx(ece(y, s))
    assert bin_index(np.array([0.0, 1 / N_BINS, 1 / N_BINS + 1e-9, 1.0])).tolist() == [0, 0, 1, N_BINS - 1]


@pytest.mark.skipif(importlib.util.find_spec("torchmetrics") is None, reason="torchmetrics is not installed")
def test_ece_matches_torchmetrics() -> None:  # pragma: no cover - only where torchmetrics is installed
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    rng = np.random.default_rng(2)
    s = rng.dirichlet([1, 1, 1], size=500)
    y = rng.integers(0, 3, 500)
    theirs = multiclass_calibration_error(torch.tensor(s), torch.tensor(y), num_classes=3, n_bins=N_BINS, norm="l1")
    assert ece(y, s) == pytest.approx(float(theirs), abs=1e-6)


def test_multilabel_ece_is_the_mean_of_per_label_binary_eces_on_known_entries() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (200, 3))
    y[:40, 1] = -1  # missing entries are left out of label 1
    s = np.clip(0.6 * y + 0.4 * rng.random((200, 3)), 0, 1)
    per_label = []
    for j in range(3):
        known = y[:, j] != -1
        p = s[known, j]
        per_label.append(ece(y[known, j], np.stack([1 - p, p], axis=1)))  # the binary single-label ECE
    assert ece(y, s) == pytest.approx(np.mean(per_label))


def test_ece_is_registered_lower_is_better_and_bootstraps_like_every_metric() -> None:
    m = get_metric("ece")
    assert "ece" in METRICS and m.higher_is_better is False
    rng = np.random.default_rng(4)
    s = rng.dirichlet([1, 1], size=80)
    y = rng.integers(0, 2, 80)
    for task, (yt, ys) in {"binary": (y, s), "multiclass": (y, s), "multilabel": (np.stack([y, 1 - y], 1), s)}.items():
        assert compute_all(yt, ys, task)["ece"].value == pytest.approx(ece(yt, ys))
    counts = rng.integers(0, 3, (5, 80)).astype(float)  # a weighted resample equals the materialised one
    batch = m.batch(Prepared(y, s), counts)
    for w, value in zip(counts, batch, strict=True):
        idx = np.repeat(np.arange(80), w.astype(int))
        assert value == pytest.approx(ece(y[idx], s[idx]))
    ci = compute_all(y, s, "binary", n_resamples=200)["ece"]
    assert ci.ci_low <= ci.ci_high and 0 <= ci.ci_low


def test_per_class_matches_sklearn_and_names_undefined_classes() -> None:
    rng = np.random.default_rng(5)
    s = rng.dirichlet([1, 1, 1, 1], size=150)
    y = rng.integers(0, 3, 150)  # class 3 never occurs in the truth
    rows = per_class(y, s, ["a", "b", "c", "d"], n_resamples=200)
    precision, recall, f1, _ = precision_recall_fscore_support(y, s.argmax(1), labels=[0, 1, 2, 3], zero_division=0)
    for c, row in enumerate(rows[:3]):
        assert row.values["recall"].value == pytest.approx(recall[c])
        assert row.values["precision"].value == pytest.approx(precision[c])
        assert row.values["f1"].value == pytest.approx(f1[c])
        assert row.values["roc_auc"].value == pytest.approx(roc_auc_score(y == c, s[:, c]))
        v = row.values["recall"]
        assert v.ci_low <= v.value <= v.ci_high
    absent = rows[3]
    assert absent.name == "d" and absent.support == 0
    assert absent.values["recall"].value is None and absent.values["recall"].reason == "no test sample of this class"
    assert absent.values["roc_auc"].value is None


def test_per_class_uses_decoded_grades_and_binary_classes_share_the_auc() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    s = np.full((6, 3), 1 / 3) + np.eye(3)[[0, 1, 1, 2, 2, 2]] * 0.1
    decoded = np.array([0, 0, 1, 1, 2, 2])  # a perfect decoding although the argmax is not
    rows = per_class(y, s, y_pred=decoded)
    assert [r.values["recall"].value for r in rows] == [1.0, 1.0, 1.0]
    yb = np.array([0, 1, 0, 1, 1])
    sb = np.array([0.2, 0.7, 0.6, 0.4, 0.9])
    binary = per_class(yb, sb)
    assert binary[0].values["roc_auc"].value == binary[1].values["roc_auc"].value
    assert binary[1].values["roc_auc"].value == pytest.approx(roc_auc_score(yb, sb))
    assert binary[0].values["precision"].value == pytest.approx(1 / 2)  # predicted 0: samples 0 and 3


def test_youden_threshold_matches_sklearn_roc_curve() -> None:
    rng = np.random.default_rng(6)
    for _ in range(10):
        y = rng.integers(0, 2, 60)
        s = np.round(0.5 * rng.random(60) + 0.3 * y, 2)  # ties included
        fpr, tpr, thresholds = roc_curve(y, s)
        assert youden_threshold(y, s) == pytest.approx(thresholds[np.argmax(tpr - fpr)])
    with pytest.raises(MetricUndefined, match="only class 1"):
        youden_threshold(np.ones(5), np.linspace(0, 1, 5))

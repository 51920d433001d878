"""Multilabel results per label: per-label AUC rows, a fixed label set under the bootstrap, named label subsets,
and the two multilabel accuracies (subset = exact match, label = MedMNIST's mean per-label accuracy)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from fmprobe.metrics import MetricInputError, bootstrap_ci, compute_all, label_aucs, paired_bootstrap, resample_weights
from fmprobe.metrics.bootstrap import percentile_interval
from fmprobe.metrics.functions import Prepared
from fmprobe.tasks import MISSING

NAMES = ["none", "one", "two", "many"]


def _rare_labels(seed: int = 0, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Labels with 0, 1, 2 and many positives (and a few missing entries), with informative scores."""
    rng = np.random.default_rng(seed)
    y = np.zeros((n, 4), dtype=np.int64)
    y[7, 1] = 1
    y[[3, 40], 2] = 1
    y[:, 3] = rng.random(n) < 0.4
    y[rng.choice(n, 6, replace=False), 3] = MISSING
    y[[10, 11], 2] = MISSING
    s = np.clip(0.25 * (y == 1) + 0.75 * rng.random((n, 4)), 0, 1)
    return y, s


def _reference_mean_auc(y: np.ndarray, s: np.ndarray, counts: np.ndarray, labels: list[int]) -> float:
    """Mean over ``labels`` of each label's AUC on the resample that draws row i counts[i] times (sklearn)."""
    aucs = []
    for j in labels:
        idx = np.repeat(np.arange(len(y)), counts.astype(int))
        idx = idx[y[idx, j] != MISSING]
        aucs.append(skm.roc_auc_score(y[idx, j], s[idx, j]))
    return float(np.mean(aucs))


def test_per_label_rows_and_the_fixed_label_set_under_the_bootstrap() -> None:
    y, s = _rare_labels()
    out = compute_all(y, s, "multilabel", n_resamples=200, seed=3, label_names=NAMES)
    none = out["roc_auc[none]"]
    assert none.value is None and "no positive among its 60 known entries" in none.reason
    for label in ("one", "two", "many"):
        v = out[f"roc_auc[{label}]"]
        assert np.isfinite([v.value, v.ci_low, v.ci_high]).all() and v.n_undefined == 0, label
    auc = out["roc_auc"]
    assert auc.detail == "3 of 4 labels (not evaluable: none: no positive)"
    assert auc.value == pytest.approx(_reference_mean_auc(y, s, np.ones(60), [1, 2, 3]), abs=1e-12)
    assert auc.n_undefined == 0 and auc.ci_low < auc.value < auc.ci_high
    # the same resamples, recomputed one by one: whole rows are drawn, the rare labels (1 and 2 positives) keep
    # their known positives and negatives, the label set is the same in every replicate, and the batched values
    # agree with the loop
    p = Prepared(y, s)
    replicates = []
    for W in resample_weights(p.strata(), 60, 200, 3):
        batched = label_aucs(p, W)
        for b in range(W.shape[0]):
            counts = W[b]
            assert counts.sum() == 60
            for j in (1, 2):
                assert [counts[y[:, j] == v].sum() for v in (1, 0, MISSING)] == [
                    (y[:, j] == v).sum() for v in (1, 0, -1)
                ]
            assert (np.isfinite(batched[b]) == [False, True, True, True]).all()
            replicates.append(_reference_mean_auc(y, s, counts, [1, 2, 3]))
            assert batched[b, 1:].mean() == pytest.approx(replicates[-1], abs=1e-12)
    assert (auc.ci_low, auc.ci_high) == pytest.approx(percentile_interval(np.array(replicates), 0.95), abs=1e-12)


def test_paired_comparison_keeps_the_label_set_and_the_pairing() -> None:
    y, s = _rare_labels(seed=1)
    worse = np.clip(s + np.random.default_rng(5).normal(0, 0.3, s.shape), 0, 1)
    cmp = paired_bootstrap("roc_auc", y, s, worse, n_resamples=200, seed=4)
    assert cmp.n_undefined == 0 and np.isfinite([cmp.low, cmp.high]).all() and cmp.low <= cmp.diff <= cmp.high
    diffs = [
        _reference_mean_auc(y, s, W[b], [1, 2, 3]) - _reference_mean_auc(y, worse, W[b], [1, 2, 3])
        for W in resample_weights(Prepared(y, s).strata(), len(y), 200, 4)
        for b in range(W.shape[0])
    ]
    assert (cmp.low, cmp.high) == pytest.approx(percentile_interval(np.array(diffs), 0.95), abs=1e-12)


def test_resampling_is_plain_without_rare_labels_and_stratified_on_rare_ones() -> None:
    rng = np.random.default_rng(2)
    common = (rng.random((200, 3)) < 0.3).astype(np.int64)
    assert Prepared(common, rng.random((200, 3))).strata() is None  # as before: every label has 10+ of each side
    rare = common.copy()
    rare[:, 1] = 0
    rare[[5, 9], 1] = 1
    strata = Prepared(rare, rng.random((200, 3))).strata()
    assert sorted(np.bincount(strata).tolist()) == [2, 198]  # the two positives of the rare label form a stratum
    s = rng.random((200, 3))
    plain = bootstrap_ci("roc_auc", rare, s, stratify=False, max_undefined=0.5)  # loses both on ~e^-2 = 13.5%
    assert 90 < plain.n_undefined < 180
    assert bootstrap_ci("roc_auc", rare, s).n_undefined == 0


def test_named_label_sets_get_their_own_mean_and_detail() -> None:
    y, s = _rare_labels()
    sets = {"rare": ["one", "two"], "with_empty": ["none", "many"]}
    out = compute_all(y, s, "multilabel", n_resamples=100, label_names=NAMES, label_sets=sets)
    rare = out["roc_auc[rare]"]
    assert rare.detail == "2 of 2 labels"
    assert rare.value == pytest.approx(_reference_mean_auc(y, s, np.ones(60), [1, 2]), abs=1e-12)
    assert rare.n_undefined == 0 and rare.ci_low <= rare.value <= rare.ci_high
    other = out["roc_auc[with_empty]"]
    assert other.detail == "1 of 2 labels (not evaluable: none: no positive)"
    assert other.value == pytest.approx(out["roc_auc[many]"].value)
    out = compute_all(y[:, :1], s[:, :1], "multilabel", label_names=["none"], label_sets={"only": ["none"]})
    assert out["roc_auc[only]"].value is None and "0 of 1 labels" in out["roc_auc[only]"].reason
    with pytest.raises(MetricInputError, match=r"label set 'x' names unknown label\(s\) \['Edema'\]"):
        compute_all(y, s, "multilabel", label_names=NAMES, label_sets={"x": ["Edema"]})
    with pytest.raises(MetricInputError, match="3 label names for 4 labels"):
        compute_all(y, s, "multilabel", label_names=NAMES[:3])


def test_subset_and_label_accuracy_differ_as_published() -> None:
    """12 images x 6 labels: one image fully right, the others with 2 or 3 wrong labels (24 of 72 wrong):
    exact match 1/12 = 0.083, mean per-label accuracy 48/72 = 0.667 (the issue's MedMNIST example)."""
    y = np.zeros((12, 6), dtype=np.int64)
    pred = y.copy()
    wrong = [2] * 9 + [3] * 2  # 24 wrong entries over 11 images
    for i, k in enumerate(wrong, start=1):
        pred[i, [(i + d) % 6 for d in range(k)]] = 1
    out = compute_all(y, pred * 0.9 + 0.05, "multilabel", n_resamples=50)
    assert out["subset_accuracy"].value == pytest.approx(1 / 12)
    assert out["label_accuracy"].value == pytest.approx(2 / 3)
    assert "accuracy" not in out
    single = compute_all(np.array([0, 1, 1, 0]), np.array([0.2, 0.8, 0.3, 0.1]), "binary")
    assert single["accuracy"].value == 0.75 and "subset_accuracy" not in single and "label_accuracy" not in single


def test_label_accuracy_leaves_missing_entries_out() -> None:
    y = np.array([[1, MISSING], [0, 1], [1, 0]])
    s = np.array([[0.9, 0.9], [0.9, 0.9], [0.2, 0.1]])  # label 0: 1 of 3 right; label 1: 2 of 2 right
    out = compute_all(y, s, "multilabel")
    assert out["label_accuracy"].value == pytest.approx((1 / 3 + 1) / 2)
    assert out["subset_accuracy"].value == pytest.approx(1 / 3)

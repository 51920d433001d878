"""Calibration: does a confidence of 0.8 mean right 80% of the time? Binning for the ``ece`` metric and the
report's reliability diagram, as plain functions of arrays.

Definition (the one ``ece`` records, :data:`N_BINS` = 15 equal-width bins, Guo et al. 2017):

* single-label: the *top-class confidence* ``conf_i = max_c y_score[i, c]`` (the probabilities' argmax, also for an
  ordinal cell whose label metrics use decoded grades: calibration is a property of the probabilities) and
  ``correct_i = argmax_c y_score[i, c] == y_true[i]``. Bin ``b`` holds ``(b/15, (b+1)/15]`` (0 falls into the first
  bin), as scikit-learn's ``calibration_curve``; ``ECE = sum_b n_b / N * |acc_b - conf_b|``, ``acc_b`` and
  ``conf_b`` the mean correctness and mean confidence in bin ``b``, empty bins contributing nothing.
* multilabel: each label is a binary problem on its known (non-missing) entries, scored as a binary single-label
  task would be: confidence ``max(p, 1 - p)``, correct when ``(p > 0.5) == y``; ``ece`` is the mean of the labels'
  ECEs over the labels with at least one known entry.

Lower is better; 0 is perfect calibration. ECE depends on the binning and is biased upwards on small test sets
(a perfectly calibrated model on 100 samples still scores a few hundredths), so compare it between
configurations on one test set, not against 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_BINS = 15  # equal-width confidence bins of the ece metric and the reliability diagram


def bin_index(confidence: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each confidence in ``[0, 1]``: ``b`` for ``(b/n, (b+1)/n]``, 0 for exactly 0 (scikit-learn's rule)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], np.clip(confidence, 0.0, 1.0), side="left").astype(np.int64)


def top_class(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Single-label (``y_score`` [N, C]) top-class confidence and whether that class is right; a multilabel
    ``y_score`` [N, L] gives per-entry ``max(p, 1-p)`` and ``(p > 0.5) == y`` ([N, L], missing entries included)."""
    y, s = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    if y.ndim == 2:
        return np.maximum(s, 1.0 - s), (s > 0.5).astype(np.int64) == y
    return s.max(axis=1), s.argmax(axis=1) == y


@dataclass(frozen=True)
class Reliability:
    """Per bin: sample count, mean confidence and accuracy (NaN for an empty bin); ``ece`` over the bins."""

    edges: np.ndarray  # [n_bins + 1]
    count: np.ndarray  # [n_bins]
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        n = self.count.sum()
        gaps = np.where(self.count > 0, np.abs(np.nan_to_num(self.accuracy - self.confidence)), 0.0)
        return float((self.count * gaps).sum() / n) if n else float("nan")


def reliability(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> Reliability:
    """The reliability diagram's bins of ``confidence`` (1-D) and ``correct`` (1-D bool)."""
    conf, ok = np.asarray(confidence, dtype=np.float64).ravel(), np.asarray(correct, dtype=np.float64).ravel()
    b = bin_index(conf, n_bins)
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, conf, minlength=n_bins) / count
        accuracy = np.bincount(b, ok, minlength=n_bins) / count
    return Reliability(np.linspace(0.0, 1.0, n_bins + 1), count, mean_conf, accuracy)

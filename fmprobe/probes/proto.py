"""Prototype probe ("SimpleShot", Wang et al. 2019): nearest class mean after centring and L2 normalisation.

The strong few-shot baseline: features are centred by the training mean and scaled to unit L2 norm ("CL2N"),
each class's prototype is the mean of its normalised training features (not renormalised, as in SimpleShot), and
a sample goes to the nearest prototype (Euclidean distance). There is nothing to fit but means, so the probe is
deterministic (no ``random_state``) and works from one image per class.

``predict_proba`` is a softmax over negative distances divided by a temperature. The temperature never changes
the predicted class (nor a binary AUC), only how peaked the probabilities are; with ``eval_set`` it is chosen
among ``temperatures`` on the validation set by the selection metric, like every probe's hyper-parameters
(largest temperature first: a tie goes to the smoothest probabilities).

Multilabel targets: each label gets a positive and a negative prototype (the means of the rows where the label is
1, resp. 0; missing entries, -1, are left out), and its probability is the two-way softmax of the negative
distances to them. A label without a known positive (or negative) training row gets its training prevalence.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval

from fmprobe.probes.base import (
    PROBES,
    ROW_BLOCK,
    ProbeBase,
    SequenceOf,
    expand_columns,
    l2_normalize,
    label_prior,
    select_best,
)

DEFAULT_TEMPERATURES = (1.0, 0.3, 0.1, 0.03, 0.01)  # distances between CL2N features lie in [0, 2]
_POSITIVE = Interval(Real, 0, None, closed="neither")


def cl2n(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Centre by ``mean`` (the training mean), then scale every row to unit L2 norm (float64)."""
    return l2_normalize(np.asarray(X, dtype=np.float64) - mean)


def distances(Z: np.ndarray, prototypes: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[N, P]`` between rows of ``Z`` and the prototypes (clipped at 0 against rounding)."""
    sq = (Z * Z).sum(axis=1)[:, None] - 2.0 * Z @ prototypes.T + (prototypes * prototypes).sum(axis=1)[None, :]
    return np.sqrt(np.maximum(sq, 0.0))


def softmax_of_negative(d: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise softmax of ``-d / temperature`` (shifted by the row minimum, which cancels)."""
    logits = -(d - d.min(axis=1, keepdims=True)) / temperature
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


@PROBES.register("proto")
class ProtoProbe(ProbeBase):
    """Nearest-prototype probe on CL2N features (SimpleShot).

    Parameters
    ----------
    temperatures : temperatures searched with ``eval_set`` (largest first wins a validation tie).
    temperature : what is used without ``eval_set``.
    task, selection_metric, classes : as for every probe (see :mod:`fmprobe.probes.base`).

    Fitted: ``mean_`` (training mean), ``prototypes_`` (``[C, D]``, one per class present in training; multilabel:
    ``[L, 2, D]``, negative then positive), ``temperature_``.
    """

    _parameter_constraints = {
        **ProbeBase._parameter_constraints,
        "temperatures": [SequenceOf(_POSITIVE)],
        "temperature": [_POSITIVE],
    }

    def __init__(
        self,
        *,
        temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES,
        temperature: float = 0.1,
        task: str = "auto",
        selection_metric: str | None = None,
        classes: Any = None,
        decoding: str = "auto",
    ) -> None:
        self.temperatures = temperatures
        self.temperature = temperature
        self.task = task
        self.selection_metric = selection_metric
        self.classes = classes
        self.decoding = decoding

    def _fit(self, X: np.ndarray, Y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None, owned: bool) -> None:
        self.mean_ = X.mean(axis=0, dtype=np.float64)
        if self.task_ == "multilabel":
            self._fit_multilabel(X, Y)
        else:
            sums, counts = self._class_sums(X, np.eye(len(self.classes_))[Y])
            self.present_ = np.flatnonzero(counts > 0)
            self.prototypes_ = sums[self.present_] / counts[self.present_, None]
        if val is None:
            self.temperature_ = float(self.temperature)
            self.val_score_, self.search_results_ = None, []
        else:
            d_val = self._distances(val[0])
            self.search_results_ = [
                {"temperature": float(t), "score": self._score(val[1], self._proba(d_val, float(t)))}
                for t in sorted(self.temperatures, reverse=True)
            ]
            best = self.search_results_[select_best(self.search_results_)]
            self.temperature_, self.val_score_ = best["temperature"], best["score"]
        self.best_params_ = {"temperature": self.temperature_}

    def _class_sums(self, X: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sums ``[M, D]`` of the CL2N rows in each of M member columns (0/1 ``[N, M]``), and the counts ``[M]``,
        in row blocks (no float64 copy of X)."""
        sums = np.zeros((members.shape[1], X.shape[1]))
        for i in range(0, X.shape[0], ROW_BLOCK):
            sums += members[i : i + ROW_BLOCK].T @ cl2n(X[i : i + ROW_BLOCK], self.mean_)
        return sums, members.sum(axis=0)

    def _fit_multilabel(self, X: np.ndarray, Y: np.ndarray) -> None:
        """A negative and a positive prototype per label; labels lacking either side fall back to their prior."""
        n_labels = Y.shape[1]
        sums, counts = self._class_sums(X, np.concatenate([Y == 0, Y == 1], axis=1).astype(np.float64))
        usable = (counts[:n_labels] > 0) & (counts[n_labels:] > 0)
        means = sums / np.maximum(counts, 1)[:, None]
        self.prototypes_ = np.stack([means[:n_labels], means[n_labels:]], axis=1) * usable[:, None, None]
        self.prior_ = np.array([label_prior(Y[:, j]) for j in range(n_labels)])
        self.usable_ = usable

    def _distances(self, X: np.ndarray) -> np.ndarray:
        """``[N, C]`` distances to the class prototypes, or ``[N, L, 2]`` to each label's (negative, positive) pair
        (in row blocks)."""
        flat = self.prototypes_.reshape(-1, self.prototypes_.shape[-1])
        out = np.empty((X.shape[0], flat.shape[0]))
        for i in range(0, X.shape[0], ROW_BLOCK):
            out[i : i + ROW_BLOCK] = distances(cl2n(X[i : i + ROW_BLOCK], self.mean_), flat)
        return out if self.task_ != "multilabel" else out.reshape(X.shape[0], -1, 2)

    def _proba(self, d: np.ndarray, temperature: float) -> np.ndarray:
        if self.task_ != "multilabel":
            return expand_columns(softmax_of_negative(d, temperature), self.present_, len(self.classes_))
        with np.errstate(over="ignore"):
            positive = 1.0 / (1.0 + np.exp((d[:, :, 1] - d[:, :, 0]) / temperature))
        return np.where(self.usable_, positive, self.prior_)

    def _predict_scores(self, X: np.ndarray) -> np.ndarray:
        return self._proba(self._distances(X), self.temperature_)

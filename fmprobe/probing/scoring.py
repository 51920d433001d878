"""Scoring a fitted cell once on the test split: every metric with its bootstrap CI (per study where the dataset
aggregates), ordinal cells on decoded grades, and flags for predictions that carry no information.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fmprobe.errors import FmprobeError
from fmprobe.metrics import MetricUndefined, compute_all
from fmprobe.metrics.aggregate import evaluation_rows
from fmprobe.metrics.perclass import youden_threshold
from fmprobe.probes import ProbeBase
from fmprobe.probing.grid import ProbeGrid
from fmprobe.results import DEGENERATE, CellInfo
from fmprobe.store import FeatureFile, SplitFeatures
from fmprobe.tasks import PRIMARY_METRIC


@dataclass(frozen=True)
class Scored:
    """A fitted cell's test outcome: scores, the metrics (values or reasons), and warnings for the row.

    ``ids`` and ``y_true`` are the rows the metrics were computed on (and the predictions file holds) when they
    are not the test split's own (per-study aggregation); None means the test split's."""

    scores: np.ndarray
    metrics: dict[str, object]
    flags: str = ""
    y_pred: np.ndarray | None = None  # decoded class codes (ordinal tasks), saved with the predictions
    ids: np.ndarray | None = None
    y_true: np.ndarray | None = None


def argmax_metric(primary: str) -> str:
    """The row name of an ordinal cell's primary metric under argmax decoding (parity with the study)."""
    return f"{primary}[argmax]"


def degenerate_flag(y_true: np.ndarray, scores: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> str:
    """A warning when the test predictions carry little or no information.

    ``degenerate: ...`` (:data:`fmprobe.results.DEGENERATE`): the scores are the same for every sample (multilabel:
    every label's), so nothing is ranked or predicted: the row is never best and never recommended. Otherwise,
    single-label: every argmax prediction one class, or accuracy at the majority-class rate, is a warning only:
    the scores may still rank the samples (a well-ranking, badly thresholded probe is common on imbalanced data),
    so threshold-free metrics such as ROC-AUC stay meaningful."""
    if np.all(np.ptp(scores, axis=0) <= 1e-12):
        what = "every label's test score" if y_true.ndim == 2 else "every test score"
        return f"{DEGENERATE} {what} is the same for every sample (the probe learned nothing)"
    if y_true.ndim == 2:
        return ""
    accuracy = float(np.mean(y_pred == y_true))
    majority = float(np.bincount(y_true, minlength=scores.shape[1]).max() / len(y_true))
    if len(np.unique(y_pred)) == 1:
        name = class_names[int(y_pred[0])] if int(y_pred[0]) < len(class_names) else str(int(y_pred[0]))
        return (
            f"constant predictions: every test prediction is class {name} (accuracy {accuracy:.3f}, majority rate "
            f"{majority:.3f}); the scores still rank the samples, so threshold-free metrics (ROC-AUC) stay meaningful"
        )
    if np.isclose(accuracy, majority):
        return f"test accuracy equals the majority-class rate {majority:.3f}"
    return ""


def scored_metrics(
    test: SplitFeatures, scores: np.ndarray, info: CellInfo, features: FeatureFile, grid: ProbeGrid,
    y_pred: np.ndarray | None = None, flags: str = "",
) -> Scored:  # fmt: skip
    """Every test metric with its bootstrap CI, on the rows :func:`evaluation_rows` gives; multilabel cells also get
    one ``roc_auc[<label>]`` per class name and one ``roc_auc[<set>]`` per ``evaluation["label_sets"]`` entry."""
    rows = evaluation_rows(test.ids, test.labels, scores, test.metadata, features.evaluation, str(features.path))
    if rows.detail and y_pred is not None:
        raise FmprobeError(f"{features.path}: decoded predictions cannot be scored {rows.detail.split(' (')[0]}.")
    values = compute_all(
        rows.y_true, rows.y_score, info.task, n_resamples=grid.n_resamples, seed=grid.seed, y_pred=y_pred,
        label_names=features.class_names, label_sets=features.evaluation.get("label_sets"),
    )  # fmt: skip
    values = {name: replace(v, detail="; ".join(filter(None, (rows.detail, v.detail)))) for name, v in values.items()}
    return Scored(rows.y_score, values, flags, ids=rows.ids, y_true=rows.y_true)


def score_test(probe: ProbeBase, test: SplitFeatures, info: CellInfo, features: FeatureFile, grid: ProbeGrid) -> Scored:
    """Score the fitted probe once on the test split: every metric with its bootstrap CI. Ordinal cells are scored
    on the probe's decoded grades (``decoding`` in its params), plus the primary metric by argmax as
    ``<metric>[argmax]``; predictions that carry no information are flagged."""
    scores = probe.predict_proba(test.features)
    y_pred = probe.predict(test.features) if info.task == "ordinal" else None  # class codes: classes are 0..C-1
    scored = scored_metrics(test, scores, info, features, grid, y_pred=y_pred)
    if y_pred is not None:
        primary = features.primary_metric or PRIMARY_METRIC[info.task]
        argmax = compute_all(
            scored.y_true, scored.scores, info.task, metrics=[primary], n_resamples=grid.n_resamples, seed=grid.seed
        )[primary]
        scored.metrics[argmax_metric(primary)] = replace(argmax, detail=scored.metrics[primary].detail)
    shown = scored.scores.argmax(axis=1) if y_pred is None and scored.scores.ndim == 2 else y_pred
    flags = degenerate_flag(np.asarray(scored.y_true), scored.scores, shown, features.class_names)
    return replace(scored, flags=flags, y_pred=y_pred)


def validation_threshold(probe: ProbeBase, X_val: np.ndarray, y_val: np.ndarray) -> dict[str, object]:
    """Binary cells: the Youden-J cut on the chosen model's *validation* positive-class scores (the rows the
    choice saw), ``{"youden_val": t, "n_val": n}``, or ``{"youden_val": None, "reason": ...}``. The report draws the
    test confusion matrix at it; the test split is never looked at."""
    if len(y_val) == 0:
        return {"youden_val": None, "reason": "no validation rows"}
    try:
        return {"youden_val": youden_threshold(y_val, probe.predict_proba(X_val)[:, 1]), "n_val": len(y_val)}
    except MetricUndefined as e:
        return {"youden_val": None, "reason": e.reason}

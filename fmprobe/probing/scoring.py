"""Scoring a fitted cell once on the test split: every metric with its bootstrap CI (per study where the dataset
aggregates), ordinal cells on decoded grades, the same metrics per subgroup of the test set when asked (the same fit,
the rows sliced), and flags for predictions that carry no information.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from fmprobe.errors import FmprobeError
from fmprobe.metrics import MetricInputError, MetricUndefined, MetricValue, compute_all
from fmprobe.metrics.aggregate import evaluation_rows
from fmprobe.metrics.perclass import youden_threshold
from fmprobe.metrics.subgroups import (
    attribute_values,
    missing_summary,
    subgroup_results,
    unit_values,
)
from fmprobe.probes import ProbeBase
from fmprobe.probing.grid import ProbeGrid
from fmprobe.results import DEGENERATE, CellInfo
from fmprobe.store import FeatureFile, SplitFeatures
from fmprobe.tasks import PRIMARY_METRIC, STUDY

Slice = tuple[str, int, Mapping[str, MetricValue]]  # (subgroup, its n, its metrics): rows results.write_cell adds


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
    subgroups: list[Slice] = field(default_factory=list)  # (subgroup, n, metrics) per group and attribute summary


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


def cell_values(
    y_true: np.ndarray, y_score: np.ndarray, y_pred: np.ndarray | None, info: CellInfo, features: FeatureFile,
    grid: ProbeGrid, detail: str = "",
) -> dict[str, MetricValue]:  # fmt: skip
    """Every metric a cell records on these rows, with bootstrap CIs: the whole test set's or one subgroup's.
    Multilabel cells also get one ``roc_auc[<label>]`` per class name and one ``roc_auc[<set>]`` per
    ``evaluation["label_sets"]`` entry; ordinal cells are scored on ``y_pred`` (the decoded grades), plus the primary
    metric by argmax as ``<metric>[argmax]``. ``detail`` (how the rows were aggregated) goes into every value."""
    values = compute_all(
        y_true, y_score, info.task, n_resamples=grid.n_bootstrap, seed=grid.seed, y_pred=y_pred,
        label_names=features.class_names, label_sets=features.evaluation.get("label_sets"),
    )  # fmt: skip
    values = {name: replace(v, detail="; ".join(filter(None, (detail, v.detail)))) for name, v in values.items()}
    if y_pred is not None:
        primary = primary_of(info, features)
        argmax = compute_all(
            y_true, y_score, info.task, metrics=[primary], n_resamples=grid.n_bootstrap, seed=grid.seed
        )[primary]
        values[argmax_metric(primary)] = replace(argmax, detail=values[primary].detail)
    return values


def primary_of(info: CellInfo, features: FeatureFile) -> str:
    """The metric a cell is ranked by: the dataset's choice, else its task's."""
    return features.primary_metric or PRIMARY_METRIC[info.task]


def score_test(probe: ProbeBase, test: SplitFeatures, info: CellInfo, features: FeatureFile, grid: ProbeGrid) -> Scored:
    """Score the fitted probe once on the test split, on the rows :func:`evaluation_rows` gives: every metric with
    its bootstrap CI (:func:`cell_values`), per subgroup too when the grid asks (:func:`subgroup_slices`: the same
    fit, the test rows sliced); predictions that carry no information are flagged."""
    scores = probe.predict_proba(test.features)
    y_pred = probe.predict(test.features) if info.task == "ordinal" else None  # class codes: classes are 0..C-1
    rows = evaluation_rows(test.ids, test.labels, scores, test.metadata, features.evaluation, str(features.path))
    if rows.detail and y_pred is not None:
        raise FmprobeError(f"{features.path}: decoded predictions cannot be scored {rows.detail.split(' (')[0]}.")
    values = cell_values(rows.y_true, rows.y_score, y_pred, info, features, grid, rows.detail)
    slices = subgroup_slices(test, rows.ids, rows.y_true, rows.y_score, y_pred, list(values), info, features, grid)
    shown = rows.y_score.argmax(axis=1) if y_pred is None and rows.y_score.ndim == 2 else y_pred
    flags = degenerate_flag(np.asarray(rows.y_true), rows.y_score, shown, features.class_names)
    return Scored(rows.y_score, values, flags, y_pred=y_pred, ids=rows.ids, y_true=rows.y_true, subgroups=slices)


# ---------------------------------------------------------------------------------------------- subgroups


def attribute_columns(
    test: SplitFeatures, row_ids: np.ndarray, features: FeatureFile, grid: ProbeGrid
) -> dict[str, np.ndarray]:
    """Per requested attribute, its value on each scored row (``row_ids``: test images, or studies where the
    dataset scores per study, whose value is the one their views share: unknown where they disagree)."""
    out = {}
    position = {str(i): k for k, i in enumerate(test.ids)}
    missing = [str(i) for i in row_ids if str(i) not in position]
    aggregated = features.evaluation.get("aggregate", "image") == "study"
    if missing and not aggregated:
        raise FmprobeError(
            f"{features.path}: {len(missing)} scored test ids (e.g. {missing[0]!r}) are not in its test split: the "
            "predictions were made on other features. Rerun the cells with --force."
        )
    for name in grid.subgroups:
        try:
            values = attribute_values(test.metadata, name, grid.bands)
        except MetricInputError as err:
            raise FmprobeError(f"{features.path}: {err}") from None
        if aggregated:
            out[name] = unit_values(test.metadata[STUDY], values, np.asarray(row_ids, dtype=str))
        else:
            out[name] = values[[position[str(i)] for i in row_ids]]
    return out


def subgroup_slices(
    test: SplitFeatures, row_ids: np.ndarray, y_true: np.ndarray, y_score: np.ndarray, y_pred: np.ndarray | None,
    names: Sequence[str], info: CellInfo, features: FeatureFile, grid: ProbeGrid,
) -> list[Slice]:  # fmt: skip
    """(subgroup, n, metrics) per group and per attribute summary of the grid's ``subgroups``, on the scored rows (a
    fitted cell's, or a saved cell's predictions): no refit, the test rows sliced. ``names``: the metrics the cell
    records (a too-small group gets each of them missing)."""
    if not grid.subgroups:
        return []
    columns = attribute_columns(test, row_ids, features, grid)
    detail = features.evaluation.get("aggregate", "image")
    detail = f"per {detail}" if detail != "image" else ""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)

    def evaluate(rows: np.ndarray) -> dict[str, MetricValue]:
        pred = None if y_pred is None else y_pred[rows]
        return cell_values(y_true[rows], y_score[rows], pred, info, features, grid, detail)

    results = subgroup_results(
        columns, evaluate, names, primary_of(info, features), y_true, y_score, y_pred=y_pred,
        min_size=grid.subgroup_min_size, n_resamples=grid.n_bootstrap, seed=grid.seed,
    )  # fmt: skip
    out: list[Slice] = []
    for r in results:
        out += [(g.label, g.n, g.metrics) for g in r.groups]
        out += [(r.attribute, n, {name: value}) for name, (n, value) in r.summary.items()]
    return out


def missing_slices(grid: ProbeGrid, primary: str, reason: str) -> list[Slice]:
    """The summary rows of every requested attribute for a cell with no predictions to slice (its probe could not
    fit): missing, with the reason, so the cell still holds a row per attribute."""
    summary = missing_summary(primary, reason)
    return [(a, 0, {name: value}) for a in grid.subgroups for name, (_, value) in summary.items()]


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

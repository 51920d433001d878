"""Scoring per unit instead of per image: CheXpert's evaluation is per study, its score the max over the views.

:func:`max_over_views` turns per-image rows into one row per unit (a study): the unit's score per label (or class)
is the maximum over its views, its label the views' common label. Views of one study with different labels are
refused, naming the study: a per-study label must be the study's, never a guess. The ``detail`` string goes into
every metric row computed on the aggregated rows, so a reader sees what ``n_test`` counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fmprobe.metrics.functions import MetricInputError
from fmprobe.tasks import STUDY


@dataclass(frozen=True)
class Aggregated:
    """One row per unit: its id, label and max-over-views score, and the sentence saying so."""

    ids: np.ndarray  # unit ids [U], in order of first appearance
    y_true: np.ndarray  # [U] or [U, L]
    y_score: np.ndarray  # [U, C] or [U, L]
    detail: str  # "per study (max over 1-3 views, 402 images in 234 studies)"


def max_over_views(units: object, y_true: object, y_score: object, unit: str = "study") -> Aggregated:
    """Aggregate per-image rows to units (``units[i]`` names image ``i``'s unit): max score, the common label."""
    names = np.asarray(units, dtype=str)
    y, s = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    if not (len(names) == len(y) == len(s)) or len(names) == 0:
        raise MetricInputError(
            f"per-{unit} scoring needs one {unit} id per image: got {len(names)} ids for {len(y)} labels and "
            f"{len(s)} scores"
        )
    first_of, codes = np.unique(names, return_index=True, return_inverse=True)[1:]
    order = np.argsort(codes, kind="stable")  # images grouped by unit, units in sorted-name order
    starts = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    labels = y[order]
    first_label = np.repeat(labels[starts], sizes, axis=0)
    differs = (labels != first_label).reshape(len(order), -1).any(axis=1)
    if differs.any():
        bad = codes[order][np.flatnonzero(differs)[0]]
        views = np.flatnonzero(codes == bad)
        raise MetricInputError(
            f"{unit} {str(names[first_of[bad]])!r} has views with different labels ({len(views)} views: "
            f"{', '.join(str(y[v].tolist()) for v in views[:4])}); per-{unit} scoring needs one label per {unit}. "
            f"Fix the labels, or score per image (?aggregate=image)"
        )
    scores = np.maximum.reduceat(s[order], starts, axis=0)
    appearance = np.argsort(first_of[codes[order][starts]], kind="stable")  # units in order of first appearance
    ids = names[order][starts][appearance]
    lo, hi = int(sizes.min()), int(sizes.max())
    views = f"{lo}" if lo == hi else f"{lo}-{hi}"
    plural = f"{unit[:-1]}ies" if unit.endswith("y") else f"{unit}s"
    detail = f"per {unit} (max over {views} views, {len(names)} images in {len(starts)} {plural})"
    return Aggregated(ids, labels[starts][appearance], scores[appearance], detail)


def evaluation_rows(
    ids: Sequence[str] | np.ndarray,
    y_true: np.ndarray,
    y_score: np.ndarray,
    metadata: Mapping[str, Sequence[str] | np.ndarray],
    evaluation: Mapping[str, object],
    where: str,
) -> Aggregated:
    """The rows test metrics are computed on: the images, or one row per study (max over its views) when the
    dataset's ``evaluation["aggregate"]`` is ``"study"`` (CheXpert's ``?aggregate=study``). Probing and fine-tuning
    both score through here, so one dataset is scored one way whichever adapts the backbone. ``where`` names the
    data in errors (a feature file, a dataset)."""
    aggregate = evaluation.get("aggregate", "image")
    if aggregate == "image":
        return Aggregated(np.asarray(ids), y_true, y_score, "")
    if aggregate != "study" or STUDY not in metadata:
        raise MetricInputError(
            f"{where}: the dataset asks for aggregate={aggregate!r} scoring but "
            + ("only 'image' and 'study' exist" if aggregate != "study" else "its test split has no study metadata")
            + "; extract the features again with this fmprobe (`fmprobe extract ... --force`)."
        )
    return max_over_views(metadata[STUDY], y_true, y_score)

"""Which rows a probe cell fits and chooses on: a stratified fraction or k shots per class of the training split
(one per patient where the split records groups), and validation subsampled in proportion.
"""

from __future__ import annotations

import numpy as np

from fmprobe.probing.grid import ProbeGrid, ValSubsample
from fmprobe.results import CellInfo
from fmprobe.store import SplitFeatures
from fmprobe.tasks import GROUP


def subsample(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the training set (every class keeps at least one sample).

    Multilabel rows are stratified by their first positive label (a missing entry, -1, counts as 0).
    """
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    if labels.ndim == 1:
        strata = labels
    else:
        positive = labels > 0  # -1 (missing) and 0 are both "not positive" for the stratum key
        strata = positive.argmax(axis=1) * positive.any(axis=1)
    chosen = []
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        take = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def shot_rows(labels: np.ndarray, shots: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``shots`` training rows per class, each from a different group where ``groups`` are given.

    Per class: one random image of every group (every image without groups), the groups in a random order, the
    first ``shots`` taken. The random order does not depend on ``shots``, so with one seed the draws are nested
    (the 2-shot set holds the 1-shot set): a curve over k changes only the added images."""
    rng = np.random.default_rng(seed)
    chosen = []
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        if groups is not None:  # the first (random) image of each group, the groups then in random order
            _, first = np.unique(groups[members], return_index=True)
            members = members[rng.permutation(first)]
        chosen.append(members[:shots])
    return np.sort(np.concatenate(chosen))


def shot_capacity(labels: np.ndarray, groups: np.ndarray | None, n_classes: int) -> np.ndarray:
    """Per class code ``0..n_classes-1``: how many shots it can give (distinct groups, or images without groups)."""
    if groups is None:
        return np.bincount(labels, minlength=n_classes)[:n_classes]
    return np.array([len(np.unique(groups[labels == c])) for c in range(n_classes)])


def training_rows(train: SplitFeatures, info: CellInfo, seed: int) -> np.ndarray:
    """Indices of the training rows a cell fits on: ``shots`` per class (one per patient/lesion where the split
    records groups) for a few-shot cell, else a stratified ``train_fraction`` of the training set."""
    if info.shots:
        return shot_rows(train.labels, info.shots, seed, train.metadata.get(GROUP))
    return subsample(train.labels, info.train_fraction, seed)


def validation_rows(
    val: SplitFeatures, info: CellInfo, grid: ProbeGrid, seed: int, used_fraction: float = 1.0
) -> np.ndarray:
    """Indices of the validation rows a cell's configuration is chosen on.

    With ``grid.val_subsample`` ``proportional`` (the default; the cell's id records it, see ``_val_subsample``) a cell fitted on ``used_fraction`` of the training
    rows is tuned on a seeded stratified subsample of validation of that fraction, so that a low-label number is
    not chosen with far more labelled data than a low-label study would have. Every class present in validation
    stays present (multilabel: every label's positives and negatives), so the selection metric stays defined;
    where validation has groups (``GROUP`` metadata: patients, lesions) whole groups are drawn. ``full``, or a
    cell on all the training rows: every validation row.
    """
    n = len(val.labels)
    if grid.val_subsample is ValSubsample.full or used_fraction >= 1.0:
        return np.arange(n)
    groups = val.metadata.get(GROUP)
    unit = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    first_rows = np.unique(unit, return_index=True)[1]  # a group is stratified by its first row's label
    chosen = np.zeros(len(first_rows), dtype=bool)
    chosen[subsample(val.labels[first_rows], used_fraction, seed)] = True
    facets = val.labels[:, None] == np.unique(val.labels)[None, :] if val.labels.ndim == 1 else (
        np.concatenate([val.labels == 1, val.labels == 0], axis=1))  # fmt: skip
    unit_facets = np.zeros((len(first_rows), facets.shape[1]), dtype=bool)
    np.logical_or.at(unit_facets, unit, facets)
    rng = np.random.default_rng(seed + 1)
    for column in range(facets.shape[1]):  # a class (or a label's positives/negatives) the draw missed: add a unit
        if not unit_facets[chosen, column].any():
            chosen[rng.choice(np.flatnonzero(unit_facets[:, column]))] = True
    return np.flatnonzero(chosen[unit])

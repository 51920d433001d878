"""The vocabulary every layer shares, each fact written once: task types, split names, the primary metric per
task and the marker of a missing multilabel entry.

This module imports nothing from fmprobe but the errors, so every layer (datasets, store, probes, metrics,
results, report) may depend on it without reaching sideways into another layer for a constant.
"""

from __future__ import annotations

from typing import Literal

TaskType = Literal["binary", "multiclass", "ordinal", "multilabel"]
TASK_TYPES: tuple[TaskType, ...] = ("binary", "multiclass", "ordinal", "multilabel")

SplitName = Literal["train", "val", "test"]
TRAIN: SplitName = "train"
VAL: SplitName = "val"
TEST: SplitName = "test"
SPLIT_NAMES: tuple[SplitName, ...] = (TRAIN, VAL, TEST)

# The metric each task type is judged by unless an adapter overrides it (the study's choices).
PRIMARY_METRIC: dict[TaskType, str] = {
    "binary": "roc_auc",
    "multiclass": "balanced_accuracy",
    "ordinal": "quadratic_kappa",
    "multilabel": "roc_auc",
}

MISSING = -1  # a multilabel label entry that is unknown (left out of every metric, per label)

# Per-sample metadata keys with a meaning every layer shares (``Split.metadata``, stored in feature files as
# ``/<split>/meta/<key>``). Adapters may add others (age, sex, site, ...); these two are read by name.
GROUP = "group"  # the unit a split keeps together (patient, lesion): few-shot draws and grouped subsamples use it
STUDY = "study"  # the unit an evaluation can aggregate to (CheXpert's study: max over its views)
METADATA_KEY = r"[a-z][a-z0-9_]*"  # the form of a metadata key (an HDF5 dataset name and a CSV column)

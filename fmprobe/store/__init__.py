"""The feature store: fingerprints, the resumable journal and the verified HDF5 feature file (no torch here)."""

from __future__ import annotations

from fmprobe._io import exclusive
from fmprobe.store.features import FeatureFile, SplitFeatures, SplitLayout, write_feature_file
from fmprobe.store.fingerprint import SCHEMA_VERSION, Fingerprint
from fmprobe.store.journal import Batch, Journal, Layout
from fmprobe.store.shards import journal_path, merge, missing_batches, parse_shard, plan_batches

merge_shards = merge  # the public API name (`fmprobe merge`)

__all__ = [
    "SCHEMA_VERSION", "Batch", "FeatureFile", "Fingerprint", "Journal", "Layout", "SplitFeatures", "SplitLayout",
    "exclusive", "journal_path", "merge", "merge_shards", "missing_batches", "parse_shard", "plan_batches", "write_feature_file",
]  # fmt: skip

"""The feature store: fingerprints, the resumable journal and the verified HDF5 feature file (no torch here)."""

from __future__ import annotations

from fmprobe.store.features import FeatureFile, SplitFeatures, SplitLayout, write_feature_file
from fmprobe.store.fingerprint import SCHEMA_VERSION, Fingerprint
from fmprobe.store.journal import Batch, Journal
from fmprobe.store.lock import exclusive

__all__ = [
    "SCHEMA_VERSION", "Batch", "FeatureFile", "Fingerprint", "Journal", "SplitFeatures", "SplitLayout",
    "exclusive", "write_feature_file",
]  # fmt: skip

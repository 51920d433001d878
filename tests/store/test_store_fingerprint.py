"""The cache key: every component of the fingerprint changes it, and the record round-trips through JSON."""

from __future__ import annotations

import dataclasses

import pytest

from fmprobe.store import Fingerprint

FP = Fingerprint("demo", "d1", "resnet50", "sha256:aa", {"size": 224}, 224, ("cls",), "bf16", "float16")


@pytest.mark.parametrize(
    "change",
    [{"dataset_digest": "d2"}, {"backbone": "resnet50:random"}, {"weights_digest": "sha256:bb"},
     {"preprocess": {"size": 224, "crop_pct": 1.0}}, {"resolution": 448}, {"readouts": ("cls", "mean_patch")},
     {"compute_dtype": "fp32"}, {"feature_dtype": "float32"}, {"schema_version": 99}, {"image_conversion": "dicom-window"}],
)  # fmt: skip
def test_every_fingerprint_component_changes_the_key(change: dict[str, object]) -> None:
    assert dataclasses.replace(FP, **change).key != FP.key
    assert Fingerprint.from_json(FP.to_json()) == FP


def test_the_key_of_an_existing_cache_never_changes() -> None:
    """Feature files written by earlier versions are found by this key: a change here orphans every cache."""
    assert FP.key == "b0a380e25e88b5e5"

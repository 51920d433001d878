"""Seeded, stratified, group-aware splitting and the saved split files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmprobe.datasets import load_dataset
from fmprobe.datasets.splits import grouped_stratified_split
from fmprobe.errors import DatasetError


def test_saved_split_that_no_longer_matches_is_refused(small_manifest: Path) -> None:
    load_dataset(f"csv:{small_manifest}")
    lines = small_manifest.read_text().splitlines()
    small_manifest.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetError, match="does not match the data"):
        load_dataset(f"csv:{small_manifest}")


def test_grouped_split_keeps_groups_whole_and_proportions() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 1000)
    groups = [f"g{i // 4}" for i in range(1000)]
    a = grouped_stratified_split(labels, groups, seed=3)
    for g in set(groups):
        assert len({a[i] for i in range(1000) if groups[i] == g}) == 1
    fractions = np.bincount(a, minlength=3) / 1000
    assert np.allclose(fractions, [0.7, 0.15, 0.15], atol=0.03)
    assert np.array_equal(a, grouped_stratified_split(labels, groups, seed=3))
    assert not np.array_equal(a, grouped_stratified_split(labels, groups, seed=4))

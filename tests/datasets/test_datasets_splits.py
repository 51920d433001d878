"""Seeded, stratified, group-aware splitting and the saved split files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmprobe.datasets import load_dataset
from fmprobe.datasets.splits import assign_splits, group_conflict, grouped_stratified_split, load_or_create_split
from fmprobe.errors import DatasetError
from fmprobe.tasks import SPLIT_NAMES


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


def test_split_file_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    split_file = tmp_path / "m.fmprobe_split_seed0_70-15-15.csv"
    ids, labels = [f"s{i}" for i in range(40)], np.arange(40) % 2
    drawn = load_or_create_split(split_file, ids, labels, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [split_file.name]  # written atomically, nothing beside it
    rows = split_file.read_text().splitlines()
    assert rows[0] == "id,split" and rows[1:] == [f"s{i},{SPLIT_NAMES[a]}" for i, a in enumerate(drawn)]
    again = load_or_create_split(split_file, ids, 1 - labels, None, seed=5)  # read back, never re-drawn
    assert np.array_equal(again, drawn)


def test_a_split_file_written_by_hand_or_an_earlier_version_is_read_as_it_is(tmp_path: Path) -> None:
    split_file = tmp_path / "split.csv"
    split_file.write_bytes(b"id,split\r\nb,test\r\na,train\r\nc,val\r\n")
    assert load_or_create_split(split_file, ["a", "b", "c"], np.zeros(3), None).tolist() == [0, 2, 1]
    split_file.write_text("id,split\na,training\nb,test\nc,val\n")
    with pytest.raises(DatasetError, match=r"unknown split names \['training'\]"):
        load_or_create_split(split_file, ["a", "b", "c"], np.zeros(3), None)


def test_assign_splits_names_each_split_and_refuses_an_empty_one(tmp_path: Path) -> None:
    ids, labels = ["a", "b", "c", "d"], np.array([0, 1, 0, 1])
    paths = [tmp_path / f"{i}.png" for i in ids]
    splits = assign_splits(ids, labels, paths, np.array([0, 2, 1, 0]), lambda name: f"no {name}")
    assert {k: v.ids for k, v in splits.items()} == {"train": ("a", "d"), "val": ("c",), "test": ("b",)}
    assert splits["train"].source.describe(1) == str(tmp_path / "d.png") and splits["test"].labels.tolist() == [1]
    only = assign_splits(ids, labels, paths, np.array([0, 1, 0, 1]), lambda name: f"no {name}", names=("train", "val"))
    assert list(only) == ["train", "val"]
    with pytest.raises(DatasetError, match="^no val$"):
        assign_splits(ids, labels, paths, np.array([0, 2, 2, 0]), lambda name: f"no {name}")


def test_group_conflict_finds_the_first_group_in_two_splits() -> None:
    assert group_conflict(["p1", "p1", "p2", "p3"], [0, 0, 1, 2]) is None
    assert group_conflict(["p1", "p2", "p2", "p1"], [0, 1, 1, 2]) == (3, "train", "test")
    assert group_conflict(["p1", "p2", "p2"], np.array([0, 1, 0], dtype=np.int8)) == (2, "val", "train")


def test_a_split_that_cannot_be_saved_anywhere_is_a_named_error(small_manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fmprobe.datasets import splits

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("FMPROBE_CACHE", str(blocker / "cache"))  # mkdir under a file fails, even as root
    monkeypatch.setattr(splits.os, "access", lambda path, mode: False)  # the data folder is read-only
    with pytest.raises(DatasetError, match=r"cannot save the drawn split to .*not-a-folder/cache/splits/.*set FMPROBE_CACHE"):
        load_dataset(f"csv:{small_manifest}")


def test_refuse_duplicates_allows_a_copy_inside_one_split(tmp_path: Path) -> None:
    from fmprobe.datasets.splits import refuse_duplicates

    for name, content in (("a", b"x" * 10), ("b", b"x" * 10), ("c", b"y" * 10)):
        (tmp_path / name).write_bytes(content)
    paths = [tmp_path / n for n in "abc"]
    refuse_duplicates(paths, [0, 0, 2], str, "here")  # a and b are one split: allowed; c differs
    with pytest.raises(DatasetError, match=r"here: identical image bytes .* in train and val: leakage"):
        refuse_duplicates(paths, [0, 1, 2], lambda i: f"row {i}", "here")
    with pytest.raises(DatasetError, match=r"the same file .* as row 0 and row 1, twice in train"):
        refuse_duplicates([paths[0], tmp_path / "." / "a"], [0, 0], lambda i: f"row {i}", "here")

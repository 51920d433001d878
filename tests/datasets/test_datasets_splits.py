"""Seeded, stratified, group-aware splitting and the saved split files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmprobe.datasets import load_dataset
from fmprobe.datasets.splits import (
    SPLIT_VERSION,
    assign_splits,
    group_conflict,
    grouped_stratified_split,
    load_or_create_split,
    split_file_for,
)
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


def test_group_size_does_not_decide_the_split() -> None:
    # 400 single-image groups and 50 groups of 8, two classes: version 1 (largest first) put every 8-group in
    # train and gave val/test only singletons.
    sizes = [1] * 400 + [8] * 50
    groups = [f"g{g}" for g, size in enumerate(sizes) for _ in range(size)]
    labels = np.asarray([g % 2 for g, size in enumerate(sizes) for _ in range(size)])
    singleton = np.asarray([size == 1 for size in sizes for _ in range(size)])
    for seed in range(3):
        a = grouped_stratified_split(labels, groups, seed=seed)
        assert group_conflict(groups, a) is None
        assert np.allclose(np.bincount(a, minlength=3) / len(a), [0.7, 0.15, 0.15], atol=0.02)
        for split in range(3):
            big_groups = {g for g, s, one in zip(groups, a, singleton, strict=True) if s == split and not one}
            assert len(big_groups) >= 3, (seed, split)  # 8-image groups in every split
            assert abs(singleton[a == split].mean() - singleton.mean()) < 0.12, (seed, split)
            assert abs(labels[a == split].mean() - 0.5) < 0.05


def test_small_strata_reach_every_split_and_rare_ones_keep_sizes_on_target() -> None:
    a = grouped_stratified_split(np.arange(30) % 5, None, seed=0)  # 6 per class at 70/15/15: 4/1/1 each
    assert [np.bincount(a[np.arange(30) % 5 == k], minlength=3).tolist() for k in range(5)] == [[4, 1, 1]] * 5
    rng = np.random.default_rng(0)
    multi_label = (rng.random((5000, 10)) < 0.2).astype(int)  # hundreds of label combinations, most tiny
    patients = [f"p{i}" for i in rng.integers(0, 1500, 5000)]
    carve = grouped_stratified_split(multi_label, patients, (0.9, 0.1, 0.0), seed=0)
    assert group_conflict(patients, carve) is None and 2 not in carve
    assert abs(np.mean(carve == 1) - 0.1) < 0.01


def test_a_split_drawn_by_the_earlier_algorithm_is_not_reused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "m.csv"
    data.write_text("")
    current = split_file_for(data, 0, (0.7, 0.15, 0.15))
    assert current == tmp_path / f"m.fmprobe_split_v{SPLIT_VERSION}_seed0_70-15-15.csv"
    assert "earlier split algorithm" not in capsys.readouterr().err
    earlier = tmp_path / "m.fmprobe_split_seed0_70-15-15.csv"  # version 1 had no tag
    earlier.write_text("id,split\na,train\n")
    assert split_file_for(data, 0, (0.7, 0.15, 0.15)) == current
    assert f"{earlier} was drawn by an earlier split algorithm" in capsys.readouterr().err
    current.write_text("id,split\na,train\n")
    split_file_for(data, 0, (0.7, 0.15, 0.15))
    assert capsys.readouterr().err == ""  # said once, until the new split exists
    assert load_or_create_split(earlier, ["a"], np.zeros(1), None).tolist() == [0]  # named explicitly: still read


def test_split_file_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    split_file = tmp_path / "m.fmprobe_split_v2_seed0_70-15-15.csv"
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

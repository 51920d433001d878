"""Sharding: batches dealt round-robin over all splits, part journals named per shard, merge waits for every part."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from fmprobe.errors import CacheError
from fmprobe.store import Batch, Journal, Layout, journal_path, merge, parse_shard, plan_batches

SIZES = {"train": 10, "val": 3, "test": 5}


def test_batches_are_dealt_round_robin_and_cover_everything() -> None:
    single = plan_batches(SIZES, 4)
    parts = [plan_batches(SIZES, 4, (i, 3)) for i in range(3)]
    assert sorted(b for p in parts for b in p) == sorted(single)
    assert parts[0] == [("train", 0, 4), ("val", 0, 3)] and parts[2] == [("train", 8, 2), ("test", 4, 1)]


@pytest.mark.parametrize("text", ["3/3", "1", "a/b", "-1/2", "0/0"])
def test_bad_shard_specs_say_what_is_expected(text: str) -> None:
    with pytest.raises(CacheError, match=r"write I/N with 0 <= I < N"):
        parse_shard(text)
    assert parse_shard(" 2 / 8 ") == (2, 8)


def _part(cache: Path, shard: tuple[int, int], rows: int = 4) -> Journal:
    """A part journal of a 4-image, 1-split extraction with batches of 2, holding every batch it owns."""
    header = {"fingerprint": "{}", "readouts": ["cls"], "dims": {"cls": 2}, "feature_dtype": "float32", "batch_size": 2,
              "shard": list(shard), "attrs": {"key": "k"}}  # fmt: skip
    layout = Layout({"train": tuple(f"id{i}" for i in range(rows))}, {"train": np.arange(rows) % 2})
    journal, _ = Journal.open(journal_path(cache, shard), header, layout)
    for split, start, count in plan_batches({"train": rows}, 2, shard):
        journal.append(Batch(split, start, count, {}, {"cls": np.full((count, 2), start, np.float32)}))
    journal.close()
    return journal


def test_merge_waits_for_every_part_then_assembles_and_cleans_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "x.h5"
    _part(cache, (1, 2))
    with pytest.raises(CacheError, match=r"1 of 2 part\(s\) not started: x\.h5\.part0of2\.journal"):
        merge(cache)
    _part(cache, (0, 2))
    assert merge(cache, extra_attrs={"images_per_s": 5.0}) == cache
    assert f"merged 2 part(s) into {cache}" in capsys.readouterr().err
    with h5py.File(cache) as h5:
        assert h5["train/features/cls"][:, 0].tolist() == [0, 0, 2, 2] and h5.attrs["images_per_s"] == 5.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]
    assert merge(cache) == cache  # idempotent


def test_a_missing_unsharded_journal_gets_advice_without_shards(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match=r"x\.h5: no such file, and no extraction journal beside it.*--force") as info:
        merge(tmp_path / "x.h5", 1)
    assert "--shard" not in str(info.value)

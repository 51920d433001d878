"""The journal: committed batches survive a torn tail or a flipped byte; a journal of other work is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmprobe.errors import CacheError
from fmprobe.store import Batch, Journal, Layout

HEADER = {"fingerprint": "{}", "readouts": ["cls"], "dims": {"cls": 3}, "feature_dtype": "float16", "batch_size": 2,
          "shard": [0, 1], "attrs": {}}  # fmt: skip
LAYOUT = Layout({"train": tuple(f"id{i}" for i in range(5))}, {"train": np.arange(5) % 2})


def _batch(start: int, count: int, skipped: dict[int, str] | None = None) -> Batch:
    skipped = skipped or {}
    rows = np.arange(start, start + count)
    keep = [r for r in rows if r - start not in skipped]
    return Batch("train", start, count, skipped, {"cls": np.repeat(np.asarray(keep, np.float16)[:, None], 3, 1)})


def test_journal_round_trip_and_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "x.journal"
    journal, committed = Journal.open(path, HEADER, LAYOUT)
    assert committed == []
    journal.append(_batch(0, 2))
    journal.append(_batch(2, 2, {1: "bad.png: cannot decode"}))
    journal.close()
    size = path.stat().st_size
    with path.open("ab") as fh:  # a batch cut short by kill -9
        fh.write(b"FMPJ\x10\x00")
    journal, committed = Journal.open(path, HEADER, LAYOUT)
    assert [(b.start, b.count) for b in committed] == [(0, 2), (2, 2)]
    assert committed[1].skipped == {1: "bad.png: cannot decode"}
    assert committed[1].features["cls"][:, 0].tolist() == [2.0]
    assert path.stat().st_size == size  # the torn tail was cut off
    journal.append(_batch(4, 1))
    journal.close()
    assert [b.start for b in journal.batches()] == [0, 2, 4]
    stored = Journal.read(path).layout  # the journal alone describes the final file
    assert stored.ids == LAYOUT.ids and np.array_equal(stored.labels["train"], LAYOUT.labels["train"])


def test_journal_with_flipped_byte_stops_at_the_damage(tmp_path: Path) -> None:
    path = tmp_path / "x.journal"
    journal, _ = Journal.open(path, HEADER, LAYOUT)
    journal.append(_batch(0, 2))
    first_end = path.stat().st_size
    journal.append(_batch(2, 2))
    journal.close()
    data = bytearray(path.read_bytes())
    data[first_end + 30] ^= 0xFF
    path.write_bytes(bytes(data))
    _, committed = Journal.open(path, HEADER, LAYOUT)
    assert [b.start for b in committed] == [0]


def test_journal_of_other_work_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.journal"
    Journal.open(path, HEADER, LAYOUT)[0].close()
    with pytest.raises(CacheError, match="different fingerprint"):
        Journal.open(path, {**HEADER, "fingerprint": '{"other": 1}'}, LAYOUT)

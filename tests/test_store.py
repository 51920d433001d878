"""The feature store: journal durability, fingerprint sensitivity, verified HDF5 files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from fmprobe.errors import CacheError
from fmprobe.store import Batch, FeatureFile, Fingerprint, Journal, Layout, SplitLayout, write_feature_file

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


def _write(path: Path, n: int = 5) -> None:
    layout = {"train": SplitLayout(tuple(f"id{i}" for i in range(n)), np.arange(n) % 2)}
    attrs = {"fingerprint": FP.to_json(), "key": FP.key, "schema_version": 1, "task": "binary",
             "class_names": json.dumps(["a", "b"]), "readouts": json.dumps(["cls"])}  # fmt: skip
    batches = [_batch(0, 2), _batch(2, 2, {0: "gone.png: not found"}), _batch(4, 1)]
    write_feature_file(path, attrs, layout, ("cls",), {"cls": 3}, "float16", batches, {"train": {2: "gone.png: not found"}})


def test_feature_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    _write(path)
    f = FeatureFile(path, expected_key=FP.key)
    split = f.load("train")
    assert split.features[:, 0].tolist() == [0, 1, 3, 4]
    assert split.ids.tolist() == ["id0", "id1", "id3", "id4"] and split.labels.tolist() == [0, 1, 1, 0]
    assert f.skipped("train") == [("id2", "gone.png: not found")]
    with h5py.File(path) as h5:  # the documented layout, readable with plain h5py
        assert h5["train/features/cls"].dtype == np.float16 and bool(h5.attrs["complete"])
    with pytest.raises(CacheError, match="readout 'mean_patch' was not extracted"):
        f.load("train", "mean_patch")


def test_damaged_feature_files_are_never_served(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    _write(path)
    data = path.read_bytes()
    for cut in (100, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(CacheError, match="--force|rebuild"):
            FeatureFile(path)
    path.write_bytes(data)
    with h5py.File(path, "a") as h5:
        h5.attrs["complete"] = False
    with pytest.raises(CacheError, match="incomplete"):
        FeatureFile(path)
    _write(path)
    with h5py.File(path, "a") as h5:  # completion flag present but rows missing
        del h5["train/labels"]
        h5["train"].create_dataset("labels", data=np.zeros(2, np.int64))
    with pytest.raises(CacheError, match="inconsistent"):
        FeatureFile(path)
    _write(path)
    with h5py.File(path, "a") as h5:
        h5.attrs["schema_version"] = 0
    with pytest.raises(CacheError, match="schema 0"):
        FeatureFile(path)
    with pytest.raises(CacheError, match="does not match the expected"):
        _write(path)
        FeatureFile(path, expected_key="0" * 16)

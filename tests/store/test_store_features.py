"""The HDF5 feature file: written once from committed batches, verified on every open, never served damaged."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from fmprobe.errors import CacheError
from fmprobe.store import Batch, FeatureFile, Fingerprint, SplitLayout, write_feature_file

FP = Fingerprint("demo", "d1", "resnet50", "sha256:aa", {"size": 224}, 224, ("cls",), "bf16", "float16")


def _rows(*values: int) -> dict[str, np.ndarray]:
    """Features whose first column names the row they belong to (so order and skipping are visible)."""
    return {"cls": np.repeat(np.asarray(values, np.float16)[:, None], 3, 1)}


def _write(path: Path, n: int = 5) -> None:
    layout = {"train": SplitLayout(tuple(f"id{i}" for i in range(n)), np.arange(n) % 2)}
    attrs = {"fingerprint": FP.to_json(), "key": FP.key, "schema_version": 1, "task": "binary",
             "class_names": json.dumps(["a", "b"]), "readouts": json.dumps(["cls"])}  # fmt: skip
    batches = [Batch("train", 0, 2, {}, _rows(0, 1)), Batch("train", 2, 2, {0: "gone.png: not found"}, _rows(3)),
               Batch("train", 4, 1, {}, _rows(4))]  # fmt: skip
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

"""Feature files as other tools read them: repr, to_numpy/to_pandas, and `fmprobe export` to parquet and npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmprobe.errors import CacheError
from fmprobe.store import Batch, FeatureFile, Fingerprint, SplitLayout, write_feature_file
from fmprobe.store.export import export_features

FP = Fingerprint("demo", "d1", "resnet50", "sha256:aa", {"size": 224}, 224, ("cls", "mean"), "bf16", "float32")


def _write(path: Path) -> FeatureFile:
    ids = {"train": ("a", "b", "c"), "test": ("d", "e")}
    layout = {
        s: SplitLayout(ids[s], np.arange(len(ids[s])) % 2, {"sex": tuple("FMF"[: len(ids[s])])}) for s in ("train", "test")
    }
    attrs = {"fingerprint": FP.to_json(), "key": FP.key, "schema_version": 1, "task": "binary",
             "class_names": json.dumps(["neg", "pos"]), "readouts": json.dumps(["cls", "mean"])}  # fmt: skip
    rows = {s: np.arange(len(ids[s]) * 2, dtype=np.float32).reshape(-1, 2) + (10 if s == "test" else 0) for s in ids}
    batches = [Batch(s, 0, len(ids[s]), {}, {"cls": rows[s], "mean": -rows[s]}) for s in ("train", "test")]
    write_feature_file(path, attrs, layout, ("cls", "mean"), {"cls": 2, "mean": 2}, "float32", batches, {})
    return FeatureFile(path)


def test_repr_names_what_a_notebook_user_needs(tmp_path: Path) -> None:
    text = repr(_write(tmp_path / "f.h5"))
    for part in ("dataset='demo'", "backbone='resnet50'", "task='binary'", "train=3", "test=2", "cls=2", "mean=2"):
        assert part in text


def test_to_numpy_and_to_pandas_hold_the_stored_values(tmp_path: Path) -> None:
    f = _write(tmp_path / "f.h5")
    X, y = f.to_numpy("test", "mean")
    assert X.dtype == np.float32 and X.tolist() == [[-10, -11], [-12, -13]] and y.tolist() == [0, 1]
    frame = f.to_pandas("train")
    assert frame.index.tolist() == ["a", "b", "c"] and all(isinstance(i, str) for i in frame.index)
    assert frame["label"].tolist() == [0, 1, 0] and frame["sex"].tolist() == ["F", "M", "F"]
    assert frame[["cls[0]", "cls[1]"]].to_numpy().tolist() == [[0, 1], [2, 3], [4, 5]]


def test_export_parquet_round_trips_every_split_readout_and_metadata(tmp_path: Path) -> None:
    f = _write(tmp_path / "f.h5")
    out = export_features(f.path, "parquet")
    assert out == tmp_path / "f.parquet"
    table = pd.read_parquet(out)
    assert table["split"].tolist() == ["train"] * 3 + ["test"] * 2 and table["id"].tolist() == list("abcde")
    assert np.stack(table["mean"]).tolist() == (-np.stack(table["cls"])).tolist()
    assert np.stack(table.loc[table["split"] == "test", "cls"]).tolist() == [[10, 11], [12, 13]]
    assert table["sex"].tolist() == ["F", "M", "F", "F", "M"] and table["label"].tolist() == [0, 1, 0, 0, 1]
    import pyarrow.parquet as pq

    facts = json.loads(pq.read_schema(out).metadata[b"fmprobe"])
    assert facts["class_names"] == ["neg", "pos"] and facts["key"] == f.key


def test_export_npz_holds_named_arrays(tmp_path: Path) -> None:
    f = _write(tmp_path / "f.h5")
    out = export_features(f.path, "npz", tmp_path / "x.npz")
    with np.load(out) as z:
        assert z["test/cls"].tolist() == [[10, 11], [12, 13]] and z["train/ids"].tolist() == ["a", "b", "c"]
        assert z["train/meta/sex"].tolist() == ["F", "M", "F"] and z["class_names"].tolist() == ["neg", "pos"]
        assert str(z["task"]) == "binary"


def test_export_refuses_unknown_formats_and_overwriting_the_cache(tmp_path: Path) -> None:
    f = _write(tmp_path / "f.h5")
    with pytest.raises(CacheError, match="unknown export format 'csv'"):
        export_features(f.path, "csv")  # type: ignore[arg-type]
    with pytest.raises(CacheError, match="overwrite the feature file"):
        export_features(f.path, "npz", f.path)

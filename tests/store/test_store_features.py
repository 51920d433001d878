"""The HDF5 feature file: written once from committed batches, verified on every open, never served damaged."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from fmprobe.errors import CacheError
from fmprobe.store import Batch, FeatureFile, Fingerprint, SplitLayout, features, write_feature_file
from fmprobe.store.fingerprint import key_of
from fmprobe.store.integrity import seal

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


def _edit(path: Path, reseal: bool = True, **attrs: object) -> None:
    """Set root attributes with plain h5py, then (by default) re-seal, as a deliberate edit would: what is left for
    the attribute checks behind the seal."""
    with h5py.File(path, "a") as h5:
        for name, value in attrs.items():
            h5.attrs[name] = value
    if reseal:
        seal(path)


def test_damaged_feature_files_are_never_served(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    _write(path)
    data = path.read_bytes()
    for cut in (100, len(data) // 2, len(data) - 10):
        path.write_bytes(data[:cut])
        with pytest.raises(CacheError, match="--force|rebuild"):
            FeatureFile(path)
    path.write_bytes(data)
    _edit(path, complete=False)
    with pytest.raises(CacheError, match="incomplete"):
        FeatureFile(path)
    _write(path)
    with h5py.File(path, "a") as h5:  # completion flag present but rows missing
        del h5["train/labels"]
        h5["train"].create_dataset("labels", data=np.zeros(2, np.int64))
    seal(path)
    with pytest.raises(CacheError, match="inconsistent"):
        FeatureFile(path)
    _write(path)
    _edit(path, schema_version=0)
    with pytest.raises(CacheError, match="schema 0"):
        FeatureFile(path)
    _write(path)
    with pytest.raises(CacheError, match=r"does not match the expected 0{16}.*--force"):
        FeatureFile(path, expected_key="0" * 16)


RANDOM_FP = json.dumps({**json.loads(FP.to_json()), "backbone": "resnet50:random"}, sort_keys=True, separators=(",", ":"))


@pytest.mark.parametrize(
    "attrs",
    [{"task": "multiclass"}, {"class_names": json.dumps(["b", "a"])}, {"primary_metric": "accuracy"},
     {"weights_label": "pretrained"}, {"dataset_spec": "demo:20"}, {"imagenet_baseline": True},
     {"fingerprint": FP.to_json().replace('"resolution":224', '"resolution":0')},
     {"fingerprint": FP.to_json().replace("resnet50", "dinov2_vitb14")}],
)  # fmt: skip
def test_any_edit_of_a_sealed_file_is_refused_with_the_fix(tmp_path: Path, attrs: dict[str, object]) -> None:
    """Silent #3: an attribute the results depend on, edited with h5py, was served as a cache hit."""
    path = tmp_path / "f.h5"
    _write(path)
    FeatureFile(path, expected_key=FP.key)
    _edit(path, reseal=False, **attrs)
    with pytest.raises(CacheError, match=r"f\.h5: .*changed after it was written.*--force"):
        FeatureFile(path, expected_key=FP.key)


@pytest.mark.parametrize(
    ("attrs", "named"),
    [({"class_names": "[a, b"}, "'class_names' is not valid JSON"), ({"class_names": '{"a": 1}'}, "'class_names' is not a JSON list"),
     ({"class_names": json.dumps(["a", "\udcff"])}, "'class_names' is not a JSON list of strings"),
     ({"fingerprint": "{not json"}, "not the hash of its stored fingerprint"),
     ({"fingerprint": "[1]", "key": key_of("[1]")}, "'fingerprint' is not a JSON object"),
     ({"key": "0" * 16}, "not the hash of its stored fingerprint"),
     ({"schema_version": "one"}, "'schema_version' is 'one', not an integer"), ({"schema_version": 1.5}, "not an integer"),
     ({"readouts": json.dumps(["cls", "bogus"])}, "readouts disagree"),
     ({"readouts": json.dumps(["bogus"]), "fingerprint": FP.to_json().replace('["cls"]', '["bogus"]'),
       "key": key_of(FP.to_json().replace('["cls"]', '["bogus"]'))}, r"readout\(s\) \['bogus'\] that split 'train' does not store"),
     ({"task": "regression"}, "task disagree"), ({"backbone": "vit_b16"}, "backbone disagree"),
     ({"fingerprint": RANDOM_FP, "key": key_of(RANDOM_FP), "weights_label": "pretrained"}, "weights_label disagree")],
)  # fmt: skip
def test_malformed_attributes_are_named_errors_not_tracebacks(tmp_path: Path, attrs: dict[str, object], named: str) -> None:
    """Behind the seal (re-sealed after the edit): each malformed attribute is refused by name with the fix."""
    path = tmp_path / "f.h5"
    _write(path)
    _edit(path, **attrs)
    with pytest.raises(CacheError, match=named) as info:
        FeatureFile(path)
    assert "--force" in str(info.value) and "f.h5" in str(info.value)


def test_files_written_before_seals_still_open_and_edits_of_their_fingerprint_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old caches keep working: verified in a child process, the key re-derived from the stored fingerprint."""
    monkeypatch.setattr(features, "WRITE_SEALED", False)
    path = tmp_path / "old.h5"
    _write(path)
    assert path.read_bytes()[:4] == b"\x89HDF"
    assert FeatureFile(path, expected_key=FP.key).load("train").features[:, 0].tolist() == [0, 1, 3, 4]
    assert "written before fmprobe sealed" in capsys.readouterr().err
    with h5py.File(path, "a") as h5:
        h5.attrs["fingerprint"] = FP.to_json().replace("resnet50", "resnet50:random")
    with pytest.raises(CacheError, match="not the hash of its stored fingerprint.*--force"):
        FeatureFile(path)
    _write(path)
    with h5py.File(path, "a") as h5:  # a flipped feature byte: caught by the dataset CRC in the child process
        h5["train/features/cls"][0, 0] = 7
    with pytest.raises(CacheError, match=r"old\.h5: checksum mismatch in train/features/cls"):
        FeatureFile(path)
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    with pytest.raises(CacheError, match="old.h5.*--force"):
        FeatureFile(path)

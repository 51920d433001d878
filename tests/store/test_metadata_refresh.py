"""Per-sample metadata in the feature file: stored for the kept rows, aligned with the ids; not part of the key, so
a change is a refresh of the stored metadata (features byte-identical, key unchanged, the old file intact when the
refresh fails), both through the store API and through a cache hit of ``fmprobe extract``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from _helpers import write_manifest
from _tinynet import registered
from PIL import Image

from fmprobe import extract_features as extract
from fmprobe.errors import CacheError
from fmprobe.store import Batch, FeatureFile, Fingerprint, SplitLayout, features, integrity, write_feature_file
from fmprobe.store.features import refresh_metadata

FP = Fingerprint("demo", "d1", "resnet50", "sha256:aa", {"size": 224}, 224, ("cls",), "bf16", "float16")
IDS = tuple(f"id{i}" for i in range(5))
SKIPPED = {2: "id2.png: not found"}  # the third row has no features, so no stored metadata either
TINY = dict(backbone="throwaway_tinynet:random", resolution=32, batch_size=8, num_workers=0, dtype="fp32", progress=False)


def _layout(**metadata: tuple[str, ...]) -> dict[str, SplitLayout]:
    return {"train": SplitLayout(IDS, np.arange(5) % 2, metadata)}


def _write(path: Path, metadata: dict[str, tuple[str, ...]] | None = None) -> None:
    attrs = {"fingerprint": FP.to_json(), "key": FP.key, "schema_version": 1, "task": "binary",
             "class_names": json.dumps(["a", "b"]), "readouts": json.dumps(["cls"])}  # fmt: skip
    rows = np.arange(12, dtype=np.float16).reshape(4, 3)
    batches = [Batch("train", 0, 2, {}, {"cls": rows[:2]}), Batch("train", 2, 3, SKIPPED, {"cls": rows[2:]})]
    write_feature_file(path, attrs, _layout(**(metadata or {})), ("cls",), {"cls": 3}, "float16", batches, {"train": SKIPPED})


def _feature_bytes(path: Path) -> dict[str, object]:
    """Every stored feature array (bytes and CRC), the ids and the root attributes: what a refresh must not touch."""
    with h5py.File(path, "r") as h5:
        out: dict[str, object] = {"attrs": {k: str(v) for k, v in h5.attrs.items()}}
        for split in h5:
            for readout, data in h5[f"{split}/features"].items():
                out[f"{split}/{readout}"] = (data[()].tobytes(), int(data.attrs["crc32"]))
            out[f"{split}/ids"] = list(h5[f"{split}/ids"].asstr()[()])
        return out


def test_metadata_round_trip_kept_rows_only_and_files_without_it(tmp_path: Path) -> None:
    _write(tmp_path / "meta.h5", {"sex": ("f", "m", "x", "", "f"), "age": ("50", "60", "70", "80", "")})
    split = FeatureFile(tmp_path / "meta.h5").load("train")
    assert split.ids.tolist() == ["id0", "id1", "id3", "id4"]  # id2 skipped: its "x" and "70" are not stored
    assert {k: v.tolist() for k, v in split.metadata.items()} == {"sex": ["f", "m", "", "f"], "age": ["50", "60", "80", ""]}
    _write(tmp_path / "plain.h5")  # the writer without metadata: a file as fmprobe wrote before metadata existed
    assert FeatureFile(tmp_path / "plain.h5").load("train").metadata == {}


def test_refresh_changes_metadata_only(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    _write(path, {"group": ("p1", "p1", "p2", "p2", "p3")})
    before = _feature_bytes(path)
    change = refresh_metadata(path, _layout(group=("p1", "p9", "p2", "p2", "p3"), sex=("f", "m", "f", "m", "")))
    assert change == "+sex,~group"
    opened = FeatureFile(path, expected_key=FP.key)  # sealed again, every CRC verified, the key unchanged
    assert integrity.verify(path) and opened.key == FP.key and _feature_bytes(path) == before
    split = opened.load("train")
    assert split.metadata["group"].tolist() == ["p1", "p9", "p2", "p3"] and split.metadata["sex"].tolist() == ["f", "m", "m", ""]
    assert opened.skipped("train") == [("id2", "id2.png: not found")]
    data = path.read_bytes()
    assert refresh_metadata(opened, _layout(group=("p1", "p9", "p2", "p2", "p3"), sex=("f", "m", "f", "m", ""))) == ""
    assert path.read_bytes() == data  # nothing to do: the file is not rewritten
    assert refresh_metadata(path, _layout()) == "-group,-sex"
    assert FeatureFile(path).load("train").metadata == {} and _feature_bytes(path) == before


def test_refresh_of_a_file_written_before_seals_and_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.h5"
    monkeypatch.setattr(features, "WRITE_SEALED", False)
    _write(path)
    monkeypatch.undo()
    assert not integrity.verify(path)  # unsealed
    before = _feature_bytes(path)
    assert refresh_metadata(path, _layout(site=("head", "arm", "leg", "leg", "torso"))) == "+site"
    assert integrity.verify(path) and _feature_bytes(path) == before
    assert FeatureFile(path).load("train").metadata["site"].tolist() == ["head", "arm", "leg", "torso"]


@pytest.mark.parametrize("where", ["_store_metadata", "seal"])
def test_a_failed_refresh_leaves_the_file_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    path = tmp_path / "f.h5"
    _write(path, {"group": ("p1", "p1", "p2", "p2", "p3")})
    data = path.read_bytes()

    def fail(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(features if where == "_store_metadata" else integrity, where, fail)
    with pytest.raises(OSError, match="No space left"):
        refresh_metadata(path, _layout(group=("q",) * 5))
    monkeypatch.undo()
    assert path.read_bytes() == data and sorted(p.name for p in tmp_path.iterdir()) == ["f.h5"]  # no temporary left
    assert FeatureFile(path).load("train").metadata["group"].tolist() == ["p1", "p1", "p2", "p3"]


def test_refresh_refuses_rows_the_dataset_does_not_list(tmp_path: Path) -> None:
    path = tmp_path / "f.h5"
    _write(path)
    other = {"train": SplitLayout(("id0", "id1", "id9"), np.zeros(3), {"sex": ("f", "m", "f")})}
    with pytest.raises(CacheError, match=r"stores 2 sample\(s\) the dataset does not list.*id3"):
        refresh_metadata(path, other)


# ---- through extraction: a cache hit refreshes, never re-extracts ----

ISIC_META = ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]


def _isic(root: Path, n: int = 24) -> Path:
    """A tiny ISIC 2019 download: two classes, images of one broken file (skipped with --on-error skip)."""
    truth, meta = [], []
    (root / "ISIC_2019_Training_Input").mkdir(parents=True)
    for i in range(n):
        name = f"ISIC_{i:07d}"
        truth.append([name] + [f"{float(c == i % 2):.1f}" for c in range(9)])
        meta.append([name, f"{30 + 5 * (i % 4)}.0", "anterior torso", f"BCN_{i:07d}", "female" if i % 3 else "male"])
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "ISIC_2019_Training_Input" / f"{name}.jpg")
    (root / "ISIC_2019_Training_Input" / "ISIC_0000005.jpg").write_bytes(b"not a jpeg")
    write_manifest(root / "ISIC_2019_Training_GroundTruth.csv", ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"], truth)
    write_manifest(root / "ISIC_2019_Training_Metadata.csv", ISIC_META, meta)
    return root


def _stored(path: Path) -> dict[str, dict[str, list[str]]]:
    f = FeatureFile(path)
    return {s: {k: v.tolist() for k, v in f.load(s).metadata.items()} for s in f.splits}


def test_a_cache_hit_refreshes_changed_metadata_without_extracting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with registered():  # a two-layer backbone: the test is about the cache, not the model
        _cache_hits_refresh(tmp_path, caplog, monkeypatch)


def _cache_hits_refresh(tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _isic(tmp_path / "isic")
    spec, out = f"isic2019:{root}?grouping=none", tmp_path / "features"
    meta_file = root / "ISIC_2019_Training_Metadata.csv"
    meta_file.rename(root / "moved.csv")  # first extracted without the metadata file: nothing stored
    first = extract(spec, out=out, on_error="skip", **TINY)
    assert first.n_skipped == 1 and all(m == {} for m in _stored(first.path).values())
    before = _feature_bytes(first.path)

    (root / "moved.csv").rename(meta_file)  # metadata appears: the same key, stored on the cache hit
    with caplog.at_level(logging.INFO, logger="fmprobe"):
        second = extract(spec, out=out, on_error="skip", **TINY)
    assert second.cache_hit and second.key == first.key and second.path == first.path
    assert "metadata refreshed: +age,+archive,+sex,+site; features unchanged" in caplog.text
    stored = _stored(second.path)
    ids = {s: FeatureFile(second.path).load(s).ids.tolist() for s in stored}
    assert sum(map(len, ids.values())) == 23 and all("ISIC_0000005" not in i for i in ids.values())  # kept rows only
    for split, values in stored.items():
        expected = ["female" if int(i[5:]) % 3 else "male" for i in ids[split]]
        assert values["sex"] == expected and values["archive"] == ["bcn20000"] * len(expected)
        assert values["age"] == [str(30 + 5 * (int(i[5:]) % 4)) for i in ids[split]]  # "35.0" stored as "35"
    assert _feature_bytes(second.path) == before

    meta_file.write_text(meta_file.read_text().replace("female", "male"))  # a corrected column
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fmprobe"):
        third = extract(spec, out=out, on_error="skip", **TINY)
    assert third.cache_hit and third.key == first.key and "metadata refreshed: ~sex; features unchanged" in caplog.text
    assert all(set(m["sex"]) == {"male"} for m in _stored(third.path).values()) and _feature_bytes(third.path) == before
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fmprobe"):
        assert extract(spec, out=out, on_error="skip", **TINY).cache_hit
    assert "metadata refreshed" not in caplog.text  # unchanged metadata: the file is left alone

    def read_only(*_: object) -> str:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("fmprobe.extract.refresh_metadata", read_only)
    meta_file.write_text(meta_file.read_text().replace("anterior torso", "head/neck"))
    data = third.path.read_bytes()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fmprobe"):
        assert extract(spec, out=out, on_error="skip", **TINY).cache_hit  # still served: its features are right
    assert "metadata differs from the dataset's but cannot be refreshed" in caplog.text and "Read-only" in caplog.text
    assert third.path.read_bytes() == data

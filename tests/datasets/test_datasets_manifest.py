"""CSV manifests: label columns, split and group columns, the persisted grouped split, named errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import make_images, write_manifest

from fmprobe.datasets import load_dataset
from fmprobe.errors import DatasetError


def test_manifest_split_is_grouped_stratified_and_persisted(small_manifest: Path) -> None:
    ds = load_dataset(f"csv:{small_manifest}")
    assert ds.task == "binary" and ds.class_names == ("benign", "malignant")
    split_files = list(small_manifest.parent.glob("manifest.fmprobe_split_*.csv"))
    assert len(split_files) == 1
    groups = {row.split(",")[0]: row.split(",")[2] for row in small_manifest.read_text().splitlines()[1:]}
    seen: dict[str, str] = {}
    for name, split in ds.splits.items():
        for sample_id in split.ids:
            assert seen.setdefault(groups[sample_id], name) == name, "a patient landed in two splits"
    assert sum(len(s) for s in ds.splits.values()) == 60
    again = load_dataset(f"csv:{small_manifest}")
    assert all(again.splits[k].ids == ds.splits[k].ids for k in ds.splits)
    assert again.content_digest == ds.content_digest


def test_manifest_with_split_column_and_multilabel(tmp_path: Path) -> None:
    names = make_images(tmp_path, ["a"] * 9)
    rows = [[n, i % 2, (i // 2) % 2, ("train", "val", "test")[i % 3]] for i, n in enumerate(names)]
    ds = load_dataset(f"csv:{write_manifest(tmp_path / 'm.csv', ['path', 'effusion', 'edema', 'split'], rows)}")
    assert ds.task == "multilabel" and ds.class_names == ("effusion", "edema")
    assert ds.splits["train"].labels.shape == (3, 2)


@pytest.mark.parametrize(
    "header, row, message",
    [
        (["path", "label", "age"], ["x.png", "a", "3"], r"unknown columns \['age'\]"),
        (["path", "effusion"], ["x.png", "maybe"], "must be 0 or 1"),
        (["path", "label"], ["x.png", ""], "line 2: missing label"),
        (["file", "label"], ["x.png", "a"], "no 'path' column"),
        (["path", "label", "split"], ["x.png", "a", "training"], r"unknown split names \['training'\]"),
    ],
)
def test_manifest_errors_name_the_problem(tmp_path: Path, header: list[str], row: list[str], message: str) -> None:
    path = write_manifest(tmp_path / "m.csv", header, [row, ["y.png", "b", *row[2:]]] if "label" in header else [row])
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(f"csv:{path}")
    assert "m.csv" in str(info.value)


def test_manifest_bom_and_non_utf8(tmp_path: Path) -> None:
    names = make_images(tmp_path, ["a", "b"] * 6)
    text = "path,label\n" + "".join(f"{n},{'ab'[i % 2]}\n" for i, n in enumerate(names))
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_dataset(f"csv:{tmp_path / 'bom.csv'}").class_names == ("a", "b")
    (tmp_path / "latin.csv").write_bytes(text.encode() + "caf\xe9.png,a\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_dataset(f"csv:{tmp_path / 'latin.csv'}")


def test_manifest_group_in_two_given_splits_is_refused(tmp_path: Path) -> None:
    names = make_images(tmp_path, ["a", "b", "a", "b"])
    rows = [[names[0], "a", "train", "p1"], [names[1], "b", "test", "p1"], [names[2], "a", "val", "p2"], [names[3], "b", "train", "p3"]]
    with pytest.raises(DatasetError, match="group 'p1' appears in both train and test"):
        load_dataset(f"csv:{write_manifest(tmp_path / 'm.csv', ['path', 'label', 'split', 'group'], rows)}")

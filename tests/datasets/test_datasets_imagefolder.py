"""The Hugging Face imagefolder layout: metadata.csv (file_name), labels from a column or the class folders,
split folders with Hugging Face's names, other columns as metadata."""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import make_images, write_manifest

from fmprobe.datasets import load_dataset
from fmprobe.errors import DatasetError
from fmprobe.tasks import GROUP


def _flat(root: Path, n: int = 24) -> list[str]:
    labels = ["none", "mild", "severe"] * (n // 3)
    names = make_images(root, labels)
    rows = [[f, lab, 20 + i, f"pt{i // 2}"] for i, (f, lab) in enumerate(zip(names, labels, strict=True))]
    write_manifest(root / "metadata.csv", ["file_name", "label", "Age", "patient_id"], rows)
    return names


def test_a_flat_imagefolder_reads_labels_and_keeps_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = _flat(tmp_path / "hf")
    ds = load_dataset(f"imagefolder:{tmp_path / 'hf'}")
    assert ds.class_names == ("mild", "none", "severe") and ds.num_images == 24
    err = capsys.readouterr().err
    assert "keeping column(s) 'Age' as age, patient_id as sample metadata" in err and "Add ?group=patient_id" in err
    ages = {i: a for s in ds.splits.values() for i, a in zip(s.ids, s.metadata["age"], strict=True)}
    assert ages[names[5]] == "25"
    graded = load_dataset(f"imagefolder:{tmp_path / 'hf'}?task=ordinal&order=none,mild,severe&group=patient_id")
    assert graded.class_names == ("none", "mild", "severe") and graded.task == "ordinal"
    seen: dict[str, str] = {}
    assert all(seen.setdefault(g, n) == n for n, s in graded.splits.items() for g in s.metadata[GROUP])
    assert list((tmp_path / "hf").glob("metadata.fmprobe_split_v2_seed0_*.csv"))  # saved in the data folder
    with pytest.raises(DatasetError, match=r"word labels \(mild, none, severe\) needs their order"):
        load_dataset(f"imagefolder:{tmp_path / 'hf'}?task=ordinal")


def test_labels_come_from_the_class_folders_when_no_column_names_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "hf"
    rows = [[f"{cls}/{f}", "site A" if i % 2 else ""] for cls in ("cat", "dog") for i, f in enumerate(make_images(root / cls, [cls] * 8))]
    write_manifest(root / "metadata.csv", ["file_name", "site"], rows)
    ds = load_dataset(f"imagefolder:{root}")
    assert ds.class_names == ("cat", "dog")
    assert all(ds.class_names[label].startswith(i.split("/")[0]) for s in ds.splits.values() for i, label in zip(s.ids, s.labels, strict=True))
    assert set(ds.splits["train"].metadata) == {"site"}  # the folder names are the label, not metadata
    assert "labels from the class folder names" in capsys.readouterr().err


def test_split_folders_with_hugging_face_names_and_a_carved_val(tmp_path: Path) -> None:
    root = tmp_path / "hf"
    for split, n in (("train", 30), ("test", 9)):
        labels = ["a", "b", "c"] * (n // 3)
        names = make_images(root / split, labels, seed=len(split))
        write_manifest(root / split / "metadata.csv", ["file_name", "label"], [list(r) for r in zip(names, labels, strict=True)])
    ds = load_dataset(f"imagefolder:{root}")
    assert len(ds.splits["test"]) == 9 and all(i.startswith("test/") for i in ds.splits["test"].ids)
    assert len(ds.splits["val"]) > 0 and all(i.startswith("train/") for i in ds.splits["val"].ids)
    assert list((root / "train").glob("metadata.fmprobe_split_v2_seed0_85-15-0.csv"))
    (root / "test").rename(root / "validation")
    renamed = load_dataset(f"imagefolder:{root}")
    assert all(i.startswith("validation/") for i in renamed.splits["val"].ids) and len(renamed.splits["test"]) > 0


@pytest.mark.parametrize(
    "header, message",
    [
        (["file", "label"], r"no 'file_name' column .*closest: 'file'.*csv:.*\?path=COLUMN"),
        (["file_name", "diagnosis"], r"no label: .*\?label=COLUMN \(columns: \['file_name', 'diagnosis'\]\)"),
    ],
)
def test_a_table_without_its_columns_names_the_fix(tmp_path: Path, header: list[str], message: str) -> None:
    names = make_images(tmp_path / "hf", ["a", "b"] * 4)
    write_manifest(tmp_path / "hf" / "metadata.csv", header, [[n, "ab"[i % 2]] for i, n in enumerate(names)])
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"imagefolder:{tmp_path / 'hf'}")
    if header[1] == "diagnosis":
        assert load_dataset(f"imagefolder:{tmp_path / 'hf'}?label=diagnosis").class_names == ("a", "b")


def test_a_folder_without_metadata_and_unlisted_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_images(tmp_path / "plain" / "cat", ["cat"] * 3)
    with pytest.raises(DatasetError, match=r"metadata.csv not found.*folder:"):
        load_dataset(f"imagefolder:{tmp_path / 'plain'}")
    _flat(tmp_path / "hf")
    make_images(tmp_path / "hf" / "extra", ["x"] * 2)
    assert load_dataset(f"imagefolder:{tmp_path / 'hf'}").num_images == 24
    assert "2 image file(s) are in no metadata.csv and are left out" in capsys.readouterr().err

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
        (["path", "effusion"], ["x.png", "maybe"], "must be 0 or 1"),
        (["path", "label"], ["x.png", ""], "line 2: missing label"),
        (["file", "label"], ["x.png", "a"], r"no 'path' column .*\?path=file"),
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


def test_an_image_listed_under_a_path_alias_is_refused_as_leakage(tmp_path: Path) -> None:
    names = make_images(tmp_path / "cat", ["a", "b"] * 6)
    rows = [[f"cat/{n}", "ab"[i % 2], ("train", "val", "test")[i % 3]] for i, n in enumerate(names)]
    rows.append([f"./cat/{names[0]}", "a", "test"])  # line 14: the train image of line 2, spelled differently
    with pytest.raises(DatasetError, match=r"the same file .*img_0000.png.* as line 2 \('cat/img_0000.png'\) and line 14 \('./cat/img_0000.png'\), in train and test: leakage"):
        load_dataset(f"csv:{write_manifest(tmp_path / 'm.csv', ['path', 'label', 'split'], rows)}")


def test_ordinal_word_labels_need_a_declared_order(tmp_path: Path) -> None:
    grades = ["none", "mild", "severe"] * 6
    names = make_images(tmp_path, grades)
    path = write_manifest(tmp_path / "m.csv", ["path", "label"], [[n, g] for n, g in zip(names, grades)])
    with pytest.raises(DatasetError, match=r"task=ordinal with word labels \(mild, none, severe\).*order=A,B,C"):
        load_dataset(f"csv:{path}?task=ordinal")
    ds = load_dataset(f"csv:{path}?task=ordinal&order=none,mild,severe")
    assert ds.class_names == ("none", "mild", "severe")
    by_id = {i: int(v) for s in ds.splits.values() for i, v in zip(s.ids, s.labels)}
    assert all(by_id[n] == ("none", "mild", "severe").index(g) for n, g in zip(names, grades))
    with pytest.raises(DatasetError, match=r"missing \['severe'\]; not found \['moderate'\]"):
        load_dataset(f"csv:{path}?task=ordinal&order=none,mild,moderate")
    with pytest.raises(DatasetError, match="list every grade once"):
        load_dataset(f"csv:{path}?task=ordinal&order=none,none,mild")


def test_numeric_labels_are_one_class_per_number_and_na_is_missing(tmp_path: Path) -> None:
    names = make_images(tmp_path, ["a", "b"] * 6)
    spellings = ["0", "1", "0.0", "1.0", "00", "1"] * 2
    path = write_manifest(tmp_path / "m.csv", ["path", "label"], [[n, v] for n, v in zip(names, spellings)])
    ds = load_dataset(f"csv:{path}")
    assert ds.class_names == ("0", "1") and ds.task == "binary"
    for missing in ("NA", "N/A", "", "nan"):
        rows = [[n, v] for n, v in zip(names, spellings)]
        rows[3][1] = missing
        with pytest.raises(DatasetError, match=rf"line 5: missing label \({missing!r}\).*Give the label or drop the row"):
            load_dataset(f"csv:{write_manifest(tmp_path / 'na.csv', ['path', 'label'], rows)}")


def test_a_row_that_is_a_symlink_loop_loads_and_is_skipped_by_name(tmp_path: Path) -> None:
    from fmprobe import extract_features
    from fmprobe.errors import ImageError

    names = make_images(tmp_path, ["a", "b"] * 6)
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    rows = [[n, "ab"[i % 2], ("train", "val", "test")[i % 3]] for i, n in enumerate(names)] + [["loop.png", "a", "test"]]
    spec = f"csv:{write_manifest(tmp_path / 'm.csv', ['path', 'label', 'split'], rows)}"
    ds = load_dataset(spec)  # no traceback at load: the file is read (and refused) at extraction
    with pytest.raises(ImageError, match="loop.png"):
        ds.splits["test"].source.load(len(ds.splits["test"]) - 1)
    result = extract_features(spec, out=tmp_path / "out", on_error="skip", backbone="efficientnet_lite0_imagenet:random",
                              resolution=32, batch_size=4, num_workers=0, dtype="fp32", progress=False)  # fmt: skip
    assert result.n_skipped == 1

"""ImageFolder layouts, with and without split folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _helpers import make_images

from fmprobe.datasets import load_dataset
from fmprobe.errors import DatasetError


def test_folder_layout_with_and_without_split_dirs(tmp_path: Path) -> None:
    for c, cls in enumerate(("cat", "dog")):
        make_images(tmp_path / "flat" / cls, [cls] * 10, seed=c)
        for s, split in enumerate(("train", "test")):
            make_images(tmp_path / "split" / split / cls, [cls] * 8, seed=10 + 2 * c + s)
    flat = load_dataset(f"folder:{tmp_path / 'flat'}")
    assert flat.class_names == ("cat", "dog") and flat.num_images == 20
    split = load_dataset(f"folder:{tmp_path / 'split'}")
    assert len(split.splits["test"]) == 16 and len(split.splits["train"]) + len(split.splits["val"]) == 16
    assert len(split.splits["val"]) >= 2


def test_folder_with_one_class_is_refused(tmp_path: Path) -> None:
    make_images(tmp_path / "only", ["x"] * 3)
    with pytest.raises(DatasetError, match="class folder"):
        load_dataset(f"folder:{tmp_path}")


def _tree(root: Path, layout: dict[str, int]) -> Path:
    """``{"train/cat": 8, ...}``: that many distinct images in each folder (seeded per folder)."""
    for i, (folder, n) in enumerate(sorted(layout.items())):
        make_images(root / folder, [folder.rsplit("/", 1)[-1]] * n, seed=100 + i)
    return root


@pytest.mark.parametrize("present", [("train", "val"), ("train",), ("train", "test"), ("train", "val", "test")])
def test_any_split_folder_makes_a_split_layout_and_missing_splits_come_from_train(tmp_path: Path, present: tuple[str, ...]) -> None:
    root = _tree(tmp_path / "d", {f"{s}/{c}": 20 if s == "train" else 6 for s in present for c in ("cat", "dog")})
    ds = load_dataset(f"folder:{root}")
    assert ds.class_names == ("cat", "dog")  # never ("train", "val")
    assert all(len(ds.splits[s]) > 0 for s in ("train", "val", "test"))
    for s in present:
        if s != "train":  # a given split is kept as given
            assert all(i.startswith(f"{s}/") for i in ds.splits[s].ids) and len(ds.splits[s]) == 12
    carved = [s for s in ("val", "test") if s not in present]
    assert all(i.startswith("train/") for s in carved for i in ds.splits[s].ids)
    assert (list((root / "train").glob("fmprobe_split_*.csv")) != []) == bool(carved)  # saved, so reruns agree
    again = load_dataset(f"folder:{root}")
    assert all(again.splits[s].ids == ds.splits[s].ids for s in ds.splits)


@pytest.mark.parametrize(
    "layout, message",
    [
        ({"train/cat": 3, "dog": 3, "cat": 3}, r"mix of split folders \(train/\) and other folders \(cat/, dog/\)"),
        ({"Validation/cat": 3, "train/cat": 3}, r"Validation/ look like splits"),
        ({"val/cat": 3, "test/dog": 3}, r"no train/"),
        ({"train/test/cat": 3, "train/dog": 3}, r"class folder named like a split inside train/"),
        ({"train/cat": 3, "train/dog": 3, "test/bird": 3}, r"\['bird'\] exist outside train/"),
    ],
)
def test_ambiguous_split_layouts_are_refused_by_name(tmp_path: Path, layout: dict[str, int], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"folder:{_tree(tmp_path / 'd', layout)}")


def test_an_image_under_two_names_is_refused_as_leakage(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {f"{s}/{c}": 6 for s in ("train", "val", "test") for c in ("cat", "dog")})
    (root / "test" / "cat" / "alias.png").symlink_to(root / "train" / "cat" / "img_0000.png")
    with pytest.raises(DatasetError, match=r"the same file .* as train/cat/img_0000.png and test/cat/alias.png, in train and test: leakage"):
        load_dataset(f"folder:{root}")
    (root / "test" / "cat" / "alias.png").unlink()
    (root / "test" / "cat" / "copy.png").write_bytes((root / "train" / "cat" / "img_0001.png").read_bytes())
    with pytest.raises(DatasetError, match=r"identical image bytes .* in train and test: leakage"):
        load_dataset(f"folder:{root}")
    (root / "test" / "cat" / "copy.png").rename(root / "train" / "cat" / "copy.png")  # a copy inside one split
    assert load_dataset(f"folder:{root}").num_images == 37


def test_a_file_name_that_is_not_utf8_is_a_named_error(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {"cat": 4, "dog": 4})
    try:
        (root / "cat" / os.fsdecode(b"caf\xe9.png")).write_bytes((root / "cat" / "img_0000.png").read_bytes() + b"x")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    with pytest.raises(DatasetError, match=r"caf\\xe9.png.* not valid UTF-8.*Rename it"):
        load_dataset(f"folder:{root}")


def test_word_grades_need_a_declared_order(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {c: 6 for c in ("none", "mild", "severe")})
    with pytest.raises(DatasetError, match=r"word labels \(mild, none, severe\) needs their order.*order="):
        load_dataset(f"folder:{root}?task=ordinal")
    ds = load_dataset(f"folder:{root}?task=ordinal&order=none,mild,severe")
    assert ds.task == "ordinal" and ds.class_names == ("none", "mild", "severe")
    assert {int(v) for i, v in zip(ds.splits["train"].ids, ds.splits["train"].labels) if i.startswith("none/")} == {0}
    with pytest.raises(DatasetError, match=r"missing \['severe'\]"):
        load_dataset(f"folder:{root}?task=ordinal&order=none,mild")
    with pytest.raises(DatasetError, match=r"not found \['moderate'\]"):
        load_dataset(f"folder:{root}?task=ordinal&order=none,mild,moderate,severe")
    with pytest.raises(DatasetError, match="add task=ordinal"):
        load_dataset(f"folder:{root}?order=none,mild,severe")


def test_numeric_class_folders_keep_their_numeric_order(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", {c: 6 for c in ("2", "10", "1")})
    assert load_dataset(f"folder:{root}?task=ordinal").class_names == ("1", "2", "10")


def test_a_dataset_is_named_by_its_location_not_its_folder_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _tree(tmp_path / "siteA" / "images", {"cat": 10, "dog": 10})
    b = _tree(tmp_path / "siteB" / "images", {"cat": 10, "dog": 10})
    name_a, name_b = load_dataset(f"folder:{a}").name, load_dataset(f"folder:{b}").name
    assert name_a != name_b and name_a.startswith("images-") and name_b.startswith("images-")
    (tmp_path / "link").symlink_to(a)
    monkeypatch.chdir(tmp_path / "siteB")
    assert load_dataset("folder:../siteA/images").name == load_dataset(f"folder:{tmp_path / 'link'}").name == name_a
    assert load_dataset(f"folder:{a}?seed=1").name != name_a  # options are part of the identity
    assert load_dataset(f"folder:{a}?seed=0").name == name_a  # ... with their defaults filled in


def test_a_looping_symlink_in_a_class_folder_is_listed_and_fails_by_name(tmp_path: Path) -> None:
    from fmprobe.errors import ImageError

    root = _tree(tmp_path / "d", {"cat": 10, "dog": 10})
    (root / "cat" / "loop.png").symlink_to(root / "cat" / "loop.png")
    ds = load_dataset(f"folder:{root}")  # no traceback while listing, resolving or splitting
    split = next(s for s in ds.splits.values() if "cat/loop.png" in s.ids)
    with pytest.raises(ImageError, match="loop.png"):
        split.source.load(split.ids.index("cat/loop.png"))

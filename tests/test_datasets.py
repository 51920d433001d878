"""Dataset adapters: specs, layouts, splits (grouped, persisted), and named errors for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _helpers import make_images, shared_file, write_manifest, write_png

from fmprobe.datasets import load_dataset, parse_spec
from fmprobe.datasets.base import FileSource, to_rgb
from fmprobe.datasets.splits import grouped_stratified_split
from fmprobe.errors import DatasetError, ImageError, UnknownNameError


def _medmnist_npz(path: Path, rgb: bool = False, multilabel: bool = False, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 255, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (
            rng.integers(0, 2, (n, 4)).astype(np.uint8) if multilabel else (np.arange(n) % 3).reshape(n, 1).astype(np.uint8)
        )
    np.savez_compressed(path, **arrays)
    return path


def test_real_pneumoniamnist_file_reads_with_official_split() -> None:
    ds = load_dataset(str(shared_file("pneumoniamnist.npz")))
    assert ds.task == "binary" and ds.class_names == ("normal", "pneumonia")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 4708, "val": 524, "test": 624}
    assert np.bincount(ds.splits["train"].labels).tolist() == [1214, 3494]
    assert ds.primary_metric == "roc_auc"
    image = ds.splits["test"].source.load(0)
    assert image.mode == "RGB" and image.size == (28, 28)


def test_real_retinamnist_is_ordinal_rgb() -> None:
    ds = load_dataset(str(shared_file("retinamnist.npz")))
    assert ds.task == "ordinal" and ds.primary_metric == "quadratic_kappa"
    assert np.bincount(ds.splits["val"].labels).tolist() == [54, 12, 28, 20, 6]


def test_medmnist_spec_finds_file_in_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FMPROBE_DATA", str(tmp_path))
    _medmnist_npz(tmp_path / "bloodmnist_64.npz", rgb=True)
    ds = load_dataset("medmnist:bloodmnist@64")
    assert ds.task == "multiclass" and len(ds.class_names) == 8 and len(ds.splits["train"]) == 12


def test_medmnist_missing_file_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FMPROBE_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match=r"breastmnist_224\.npz.*put it at"):
        load_dataset("medmnist:breastmnist@224")


@pytest.mark.parametrize(
    "spec, message",
    [("medmnist:pneumonia", "Closest: pneumoniamnist"), ("medmnist:pathmnist@100", "does not exist"),
     ("medmnist:pathmnist@big", "not a number")],
)  # fmt: skip
def test_medmnist_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_unknown_npz_layout_multilabel_inferred(tmp_path: Path) -> None:
    ds = load_dataset(str(_medmnist_npz(tmp_path / "custom.npz", multilabel=True)))
    assert ds.task == "multilabel" and ds.splits["train"].labels.shape == (12, 4)


def test_npz_with_wrong_keys_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match=r"bad\.npz.*missing keys"):
        load_dataset(str(path))


def test_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    path = _medmnist_npz(tmp_path / "evil.npz")
    data = dict(np.load(path))
    data["train_labels"] = np.array([{"x": 1}] * 12, dtype=object).reshape(12, 1)
    np.savez(path, **data)
    with pytest.raises(DatasetError, match="pickled objects"):
        load_dataset(str(path))


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


def test_saved_split_that_no_longer_matches_is_refused(small_manifest: Path) -> None:
    load_dataset(f"csv:{small_manifest}")
    lines = small_manifest.read_text().splitlines()
    small_manifest.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetError, match="does not match the data"):
        load_dataset(f"csv:{small_manifest}")


def test_grouped_split_keeps_groups_whole_and_proportions() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 1000)
    groups = [f"g{i // 4}" for i in range(1000)]
    a = grouped_stratified_split(labels, groups, seed=3)
    for g in set(groups):
        assert len({a[i] for i in range(1000) if groups[i] == g}) == 1
    fractions = np.bincount(a, minlength=3) / 1000
    assert np.allclose(fractions, [0.7, 0.15, 0.15], atol=0.03)
    assert np.array_equal(a, grouped_stratified_split(labels, groups, seed=3))
    assert not np.array_equal(a, grouped_stratified_split(labels, groups, seed=4))


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
        (["path", "label"], ["x.png", ""], "empty label"),
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


def test_folder_layout_with_and_without_split_dirs(tmp_path: Path) -> None:
    for cls in ("cat", "dog"):
        make_images(tmp_path / "flat" / cls, [cls] * 10)
        for split in ("train", "test"):
            make_images(tmp_path / "split" / split / cls, [cls] * 8)
    flat = load_dataset(f"folder:{tmp_path / 'flat'}")
    assert flat.class_names == ("cat", "dog") and flat.num_images == 20
    split = load_dataset(f"folder:{tmp_path / 'split'}")
    assert len(split.splits["test"]) == 16 and len(split.splits["train"]) + len(split.splits["val"]) == 16
    assert len(split.splits["val"]) >= 2


def test_folder_with_one_class_is_refused(tmp_path: Path) -> None:
    make_images(tmp_path / "only", ["x"] * 3)
    with pytest.raises(DatasetError, match="class folder"):
        load_dataset(f"folder:{tmp_path}")


def test_demo_is_deterministic_and_grouped() -> None:
    a = load_dataset("demo:12")
    b = load_dataset("demo:12")
    assert a.class_names == ("regular", "irregular_border", "variegated", "reticular")
    assert a.content_digest == b.content_digest and a.num_images == 48
    pixels = np.asarray(a.splits["train"].source.load(0))
    assert pixels.shape == (96, 96, 3) and pixels.std() > 5


def test_unknown_source_suggests_closest() -> None:
    with pytest.raises(UnknownNameError, match="Closest: medmnist"):
        parse_spec("medmnst:pathmnist")
    with pytest.raises(DatasetError, match="unknown option"):
        load_dataset("demo:12?colour=red")


def test_image_format_errors_name_the_file(tmp_path: Path) -> None:
    cases = {
        "sixteen.png": (np.full((8, 8), 4000, np.uint16), "16-bit"),
        "rgba.png": (np.zeros((8, 8, 4), np.uint8), "alpha channel"),
    }
    for name, (array, message) in cases.items():
        path = write_png(tmp_path / name, array)
        with pytest.raises(ImageError, match=message) as info:
            FileSource((path,)).load(0)
        assert name in str(info.value)
    from PIL import Image

    Image.new("P", (8, 8)).save(tmp_path / "palette.png")
    with pytest.raises(ImageError, match="palette"):
        FileSource((tmp_path / "palette.png",)).load(0)
    good = write_png(tmp_path / "good.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:40])
    with pytest.raises(ImageError, match=r"trunc\.png: cannot decode"):
        FileSource((tmp_path / "trunc.png",)).load(0)
    with pytest.raises(ImageError, match="not found"):
        FileSource((tmp_path / "nope.png",)).load(0)
    assert to_rgb(Image.new("L", (4, 4)), "x").mode == "RGB"


def test_a_bare_folder_is_not_guessed(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="write folder:"):
        load_dataset(str(tmp_path))

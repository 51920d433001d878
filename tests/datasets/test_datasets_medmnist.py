"""MedMNIST by flag and MedMNIST-layout .npz files: the real files, task inference, named errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from _helpers import shared_file

from fmprobe.datasets import load_dataset
from fmprobe.errors import DatasetError


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


def _with(path: Path, **arrays: np.ndarray) -> str:
    data = dict(np.load(path))
    data.update(arrays)
    np.savez(path, **data)
    return str(path)


@pytest.mark.parametrize(
    "labels,message",
    [
        (np.array([[0.0], [1.5]] + [[1.0]] * 10), r"custom\.npz: train_labels has a non-integer label \[1\.5\] at row 1"),
        (np.array([[0.0], [np.nan]] + [[1.0]] * 10), r"custom\.npz: train_labels has a missing \(NaN/inf\) label at row 1"),
        (np.array([["a"]] * 12), r"custom\.npz: train_labels has dtype <U1; labels must be integer class numbers"),
        (np.array([[-1]] + [[1]] * 11), r"custom\.npz: train_labels contains -1; class numbers start at 0"),
    ],
)  # fmt: skip
def test_npz_labels_a_cast_would_change_are_refused(tmp_path: Path, labels: np.ndarray, message: str) -> None:
    spec = _with(_medmnist_npz(tmp_path / "custom.npz"), train_labels=labels)
    with pytest.raises(DatasetError, match=message):
        load_dataset(spec)


def test_npz_integral_float_labels_are_read_as_classes(tmp_path: Path) -> None:
    path = _medmnist_npz(tmp_path / "custom.npz")
    spec = _with(path, train_labels=(np.arange(12) % 3).reshape(12, 1).astype(np.float32))
    assert load_dataset(spec).splits["train"].labels.tolist() == [0, 1, 2] * 4


def test_npz_missing_marker_is_not_a_256_class_task(tmp_path: Path) -> None:
    binary = (np.arange(12) % 2).reshape(12, 1).astype(np.uint8)
    marked = binary.copy()
    marked[3] = 255
    spec = _with(_medmnist_npz(tmp_path / "custom.npz"), train_labels=marked, val_labels=binary, test_labels=binary)
    with pytest.raises(DatasetError, match=r"labels go up to 255 but classes 2, 3, 4, 5, 6, \.\.\. \(253 of 256\) never occur; is 255 a 'missing' marker\?.*\?num_classes=256"):
        load_dataset(spec)
    with pytest.raises(DatasetError, match=r"num_classes=2, but the labels go up to 255"):
        load_dataset(spec + "?num_classes=2")
    assert len(load_dataset(spec + "?num_classes=256").class_names) == 256  # declared, so not a guess
    sparse = _with(tmp_path / "custom.npz", train_labels=binary * 2, val_labels=binary * 2, test_labels=binary * 2)
    with pytest.raises(DatasetError, match=r"classes 1 \(1 of 3\) never occur"):
        load_dataset(sparse)
    assert load_dataset(sparse + "?num_classes=3").task == "multiclass"


def test_npz_multilabel_entries_are_zero_one_or_missing(tmp_path: Path) -> None:
    path = _medmnist_npz(tmp_path / "custom.npz", multilabel=True)
    labels = np.zeros((12, 4), np.int16)
    labels[0, 2] = -1  # tasks.MISSING: unknown, left out of that label's metric
    assert load_dataset(_with(path, train_labels=labels)).splits["train"].labels[0, 2] == -1
    labels[1, 1] = 255
    with pytest.raises(DatasetError, match=r"train_labels contains 255; multi-label entries are 0, 1 or -1"):
        load_dataset(_with(path, train_labels=labels))


def test_npz_with_an_empty_split_is_refused_naming_the_key(tmp_path: Path) -> None:
    spec = _with(_medmnist_npz(tmp_path / "custom.npz"), val_images=np.zeros((0, 28, 28), np.uint8), val_labels=np.zeros((0, 1), np.uint8))
    with pytest.raises(DatasetError, match=r"custom\.npz: val_images is empty \(0 samples\); every split needs samples"):
        load_dataset(spec)


def test_a_renamed_real_retinamnist_declares_its_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    copy = tmp_path / "retina_copy.npz"
    copy.write_bytes(shared_file("retinamnist.npz").read_bytes())
    inferred = load_dataset(str(copy))
    assert inferred.task == "multiclass" and inferred.primary_metric == "balanced_accuracy"
    told = capsys.readouterr().err
    assert "retina_copy.npz: task inferred as multiclass (5 classes, from the labels)" in told
    assert f"declare it with {copy}?task=ordinal" in told
    load_dataset(str(copy))
    assert "inferred" not in capsys.readouterr().err  # said once
    declared = load_dataset(f"npz:{copy}?task=ordinal")
    assert declared.task == "ordinal" and declared.primary_metric == "quadratic_kappa"
    assert declared.content_digest != inferred.content_digest  # the multiclass feature cache is never reused
    flagged = load_dataset(f"npz:{copy}?flag=retinamnist")
    assert flagged.task == "ordinal" and flagged.class_names == ("0", "1", "2", "3", "4")
    assert "inferred" not in capsys.readouterr().err
    real = shared_file("retinamnist.npz")  # a file named like its flag keeps its key with a redundant declaration
    assert load_dataset(f"{real}?task=ordinal").content_digest == load_dataset(str(real)).content_digest


@pytest.mark.parametrize(
    ("multilabel", "option", "message"),
    [
        (False, "task=multilabel", "the declared task is 'multilabel', but the file has [N, 1] labels"),
        (True, "task=ordinal", "the declared task is 'ordinal', but the file has [N, 4] labels"),
        (False, "task=binary", "task=binary, but the labels have 3 classes; use task=multiclass|ordinal"),
        (False, "flag=chestmnist", "the task of MedMNIST flag 'chestmnist' is 'multilabel'"),
        (False, "task=ordnal", "task='ordnal'; use one of binary, multiclass, ordinal, multilabel"),
        (False, "flag=retina", "flag='retina'; use one of"),
    ],
)
def test_a_declared_task_must_fit_the_labels(tmp_path: Path, multilabel: bool, option: str, message: str) -> None:
    path = _medmnist_npz(tmp_path / "file.npz", multilabel=multilabel)
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_dataset(f"npz:{path}?{option}")


def test_declared_ordinal_npz_and_medmnist_options_refused_by_name(tmp_path: Path) -> None:
    path = _medmnist_npz(tmp_path / "grades.npz")
    assert load_dataset(f"npz:{path}?task=ordinal&num_classes=4").class_names == ("0", "1", "2", "3")
    with pytest.raises(DatasetError, match=re.escape("unknown option(s) ['task']; medmnist takes no options")):
        load_dataset("medmnist:retinamnist?task=ordinal")

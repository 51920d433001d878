"""MedMNIST by flag and MedMNIST-layout .npz files: the real files, task inference, named errors."""

from __future__ import annotations

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

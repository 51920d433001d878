"""``hf:`` datasets: a clear error without the ``datasets`` package; with it (skipped otherwise), a dataset saved
with ``save_to_disk`` and one in the offline datasets cache, labels from the ClassLabel, metadata, carved val."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from fmprobe.datasets import load_dataset
from fmprobe.errors import DatasetError
from fmprobe.tasks import GROUP

# tests/datasets is on the test path, so a bare find_spec finds it as a namespace package: look for the real one.
_spec = importlib.util.find_spec("datasets")
needs_datasets = pytest.mark.skipif(
    _spec is None or _spec.origin is None, reason="the `datasets` package is not installed (pip install datasets)"
)


def test_without_the_datasets_package_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError, installed or not
    with pytest.raises(DatasetError, match=r"hf:org/name needs the Hugging Face `datasets` package: pip install datasets.*imagefolder:DIR"):
        load_dataset("hf:org/name")


def _saved(folder: Path, n: int = 30) -> Path:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(n + 6)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["benign", "malignant"]),
                                  "age": datasets.Value("int64"), "patient_id": datasets.Value("string")})  # fmt: skip

    def part(lo: int, hi: int) -> datasets.Dataset:
        rows = range(lo, hi)
        return datasets.Dataset.from_dict(
            {"image": images[lo:hi], "label": [i % 2 for i in rows], "age": [None if i == 0 else 20 + i for i in rows],
             "patient_id": [f"p{i // 2}" for i in rows]}, features=features)  # fmt: skip

    datasets.DatasetDict({"train": part(0, n), "test": part(n, n + 6)}).save_to_disk(str(folder))
    return folder


@needs_datasets
def test_a_saved_dataset_loads_with_labels_metadata_and_a_carved_val(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _saved(tmp_path / "saved")
    ds = load_dataset(f"hf:{folder}")
    assert ds.class_names == ("benign", "malignant") and ds.task == "binary"
    assert len(ds.splits["test"]) == 6 and len(ds.splits["train"]) + len(ds.splits["val"]) == 30
    assert ds.splits["test"].labels.tolist() == [0, 1] * 3
    train = ds.splits["train"]
    assert set(train.metadata) == {"age", "patient_id"} and ("" in train.metadata["age"]) == ("train/0" in train.ids)
    assert np.asarray(train.source.load(0)).shape == (8, 8, 3)
    err = capsys.readouterr().err
    assert "Add ?group=patient_id" in err and list(folder.glob("hf_*fmprobe_split_v2_seed0_85-15-0.csv"))
    grouped = load_dataset(f"hf:{folder}?group=patient_id")
    assert set(grouped.splits["val"].metadata[GROUP]).isdisjoint(grouped.splits["train"].metadata[GROUP])
    assert "patient_id" not in grouped.splits["train"].metadata
    assert load_dataset(f"hf:{folder}").content_digest == ds.content_digest
    with pytest.raises(DatasetError, match=r"label='dx' is not a column"):
        load_dataset(f"hf:{folder}?label=dx")


@needs_datasets
def test_a_dataset_id_is_read_from_the_offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache as an earlier online ``load_dataset('org/tiny')`` leaves it (built here from parquet files)."""
    import datasets

    saved = datasets.load_from_disk(str(_saved(tmp_path / "saved")))
    cache = tmp_path / "cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    for split, part in saved.items():
        part.to_parquet(str(tmp_path / f"{split}.parquet"))
    files = {s: str(tmp_path / f"{s}.parquet") for s in saved}
    datasets.load_dataset("parquet", data_files=files, cache_dir=str(cache))
    try:
        (built,) = (cache / "parquet").iterdir()
        shutil.move(built, cache / "org___tiny" / "default")
        for arrow in (cache / "org___tiny" / "default").rglob("parquet-*.arrow"):
            arrow.rename(arrow.with_name(arrow.name.replace("parquet-", "tiny-")))
        datasets.load_dataset("org/tiny", cache_dir=str(cache))
    except Exception as err:  # the cache layout is the datasets package's own business
        pytest.skip(f"this datasets version lays out its cache differently ({type(err).__name__}: {err})")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    ds = load_dataset("hf:org/tiny")
    assert ds.name == "tiny" and ds.num_images == 36 and ds.class_names == ("benign", "malignant")
    with pytest.raises(DatasetError, match=r"hf:org/absent: not found in the local Hugging Face datasets cache.*load_dataset\('org/absent'\)"):
        load_dataset("hf:org/absent")


def test_a_folder_named_datasets_that_shadows_the_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    monkeypatch.setitem(sys.modules, "datasets", types.ModuleType("datasets"))  # what ./datasets/ imports as
    with pytest.raises(DatasetError, match=r"hf:org/name needs .* finds .*which is not it.*Run from another folder"):
        load_dataset("hf:org/name")

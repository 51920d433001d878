"""APTOS 2019 in its Kaggle layout: ordinal grades, the persisted stratified split, named layout errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from _datasets_layouts import random_image, write_csv
from _helpers import write_png

from fmprobe.datasets import aptos2019, load_dataset
from fmprobe.errors import DatasetError


@pytest.fixture
def aptos_dir(tmp_path: Path) -> Path:
    root = tmp_path / "aptos2019-blindness-detection"
    rows = []
    for i in range(30):
        id_code = f"{i * 7919:012x}"
        rows.append([id_code, i % 5])
        write_png(root / "train_images" / f"{id_code}.png", random_image(i))
    write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    write_csv(root / "test.csv", ["id_code"], [["ffff00001111"]])  # present in the download, ignored
    return root


def test_aptos_parses_ordinal_with_persisted_stratified_split(aptos_dir: Path) -> None:
    ds = load_dataset(f"aptos2019:{aptos_dir}")
    assert ds.task == "ordinal" and ds.primary_metric == "quadratic_kappa"
    assert ds.class_names == ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 20, "val": 5, "test": 5}
    assert all(sorted(set(v.labels.tolist())) == [0, 1, 2, 3, 4] for v in ds.splits.values())
    assert (aptos_dir / "train.fmprobe_split_v2_seed0_70-15-15.csv").exists()
    assert load_dataset(f"aptos2019:{aptos_dir}").splits["test"].ids == ds.splits["test"].ids
    assert ds.splits["val"].source.load(0).mode == "RGB"


def test_aptos_named_errors(aptos_dir: Path) -> None:
    (aptos_dir / "train_images" / "000000000000.png").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) listed in train.csv are missing, e.g. 000000000000\.png"):
        load_dataset(f"aptos2019:{aptos_dir}")
    text = (aptos_dir / "train.csv").read_text().replace("000000001eef,1", "000000001eef,7")
    (aptos_dir / "train.csv").write_text(text)
    with pytest.raises(DatasetError, match=r"train\.csv, line 3: diagnosis '7'.*not a grade"):
        aptos2019.read_labels(aptos_dir)
    (aptos_dir / "train.csv").rename(aptos_dir / "Train.csv")
    with pytest.raises(DatasetError, match=r"train\.csv not found: the Kaggle APTOS 2019 download.*Train\.csv"):
        load_dataset(f"aptos2019:{aptos_dir}")
    with pytest.raises(DatasetError, match=r"unknown option\(s\) \['grouping'\]"):
        load_dataset(f"aptos2019:{aptos_dir}?grouping=none")


def test_aptos_single_grade_training_file_is_refused(aptos_dir: Path) -> None:
    ids = aptos2019.read_labels(aptos_dir)[0]  # images present: only the labels say it is not a training file
    (aptos_dir / "train.fmprobe_split_seed0_70-15-15.csv").unlink(missing_ok=True)
    write_csv(aptos_dir / "train.csv", ["id_code", "diagnosis"], [[i, 0] for i in ids])  # sample_submission.csv
    with pytest.raises(DatasetError, match=r"train\.csv: all 30 rows have diagnosis 0 \(No DR\); a training file needs "
                       r"more than one grade\. It looks like Kaggle's sample_submission\.csv"):
        load_dataset(f"aptos2019:{aptos_dir}")
    write_csv(aptos_dir / "train.csv", ["id_code", "diagnosis"], [[i, 2] for i in ids])
    with pytest.raises(DatasetError, match=r"all 30 rows have diagnosis 2 \(Moderate\); a training file needs more "
                       r"than one grade\. Put the competition's train\.csv"):
        aptos2019.read_labels(aptos_dir)

"""ImageFolder layouts, with and without split folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from _helpers import make_images

from fmprobe.datasets import load_dataset
from fmprobe.errors import DatasetError


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

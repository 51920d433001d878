"""Dataset sources: spec parsing, declared options, hints derived from the SOURCES records."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmprobe.datasets import load_dataset, parse_spec
from fmprobe.errors import DatasetError, UnknownNameError


def test_unknown_source_suggests_closest() -> None:
    with pytest.raises(UnknownNameError, match="Closest: medmnist"):
        parse_spec("medmnst:pathmnist")
    with pytest.raises(DatasetError, match="unknown option"):
        load_dataset("demo:12?colour=red")


def test_a_bare_folder_is_not_guessed(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="write folder:"):
        load_dataset(str(tmp_path))

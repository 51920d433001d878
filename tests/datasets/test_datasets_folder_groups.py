"""Folders have patients too: ``folder:DIR?group=REGEX``, the warning for file names that encode a patient,
and ``split_file=`` for folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from _helpers import write_png

from fmprobe.datasets import load_dataset
from fmprobe.errors import DatasetError
from fmprobe.tasks import GROUP


def _patients(root: Path, names: dict[str, list[str]]) -> Path:
    """``{"cat": ["patient1_a.png", ...]}``: one small image per file name, distinct across calls (seeded by path)."""
    for cls, files in names.items():
        for name in files:
            seed = int(hashlib.sha256(str(root / cls / name).encode()).hexdigest()[:8], 16)
            write_png(root / cls / name, np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    return root


def _by_patient(cls: str, patients: range, views: str = "ab") -> list[str]:
    return [f"patient{p}_{v}.png" for p in patients for v in views]


def _groups_disjoint(ds) -> bool:  # noqa: ANN001
    seen: dict[str, str] = {}
    return all(seen.setdefault(g, name) == name for name, s in ds.splits.items() for g in s.metadata[GROUP])


def test_group_regex_keeps_each_patient_in_one_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _patients(tmp_path / "d", {"cat": _by_patient("cat", range(12)), "dog": _by_patient("dog", range(12, 24))})
    ds = load_dataset(rf"folder:{root}?group=^(patient\d+)_")  # '+' stays a plus in the spec
    train = ds.splits["train"]
    assert {g for s in ds.splits.values() for g in s.metadata[GROUP]} == {f"patient{p}" for p in range(24)}
    assert all(g == i.split("/")[1].split("_")[0] for i, g in zip(train.ids, train.metadata[GROUP], strict=True))
    assert _groups_disjoint(ds)
    assert len(list(root.glob("fmprobe_split_v2_seed0_group-*_70-15-15.csv"))) == 1
    assert "look like they encode a patient" not in capsys.readouterr().err
    whole = load_dataset(rf"folder:{root}?group=patient\d+")  # no capture group: the whole match
    assert whole.splits["train"].metadata[GROUP] == train.metadata[GROUP]
    assert ds.name != load_dataset(f"folder:{root}").name  # a grouped variant is its own dataset


def test_a_file_the_regex_does_not_match_is_named(tmp_path: Path) -> None:
    root = _patients(tmp_path / "d", {"cat": _by_patient("cat", range(4)) + ["scan7.png"], "dog": _by_patient("dog", range(4, 8))})
    with pytest.raises(DatasetError, match=r"file 'cat/scan7.png' .* does not match group='\^\(patient\\\\d\+\)_'"):
        load_dataset(rf"folder:{root}?group=^(patient\d+)_")
    with pytest.raises(DatasetError, match=r"group='\(patient' is not a regular expression"):
        load_dataset(f"folder:{root}?group=(patient")


@pytest.mark.parametrize(
    "files, hint",
    [
        (["patient{p}_{v}.png"], r"?group=(patient[_-]?\d+)"),
        (["P{p:03d}-{v}.png"], r"?group=(P[_-]?\d+)"),
        (["{p}{p}{p}_{v}.png"], r"?group=^([^_-]+)[_-]"),
        (["case{p}/{v}.png"], "?group=^([^/]+)/"),
    ],
)
def test_file_names_that_encode_a_patient_are_warned_about_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: list[str], hint: str
) -> None:
    names = {cls: [f.format(p=p, v=v) for f in files for p in range(4 * c, 4 * c + 4) for v in "ab"] for c, cls in enumerate(("cat", "dog"))}
    root = _patients(tmp_path / "d", names)
    load_dataset(f"folder:{root}")
    err = capsys.readouterr().err
    assert err.count("look like they encode a patient or study") == 1 and hint in err
    load_dataset(f"folder:{root}")
    assert "encode a patient" not in capsys.readouterr().err  # once


@pytest.mark.parametrize("files", [["img_{i:04d}.png"], ["{cls}_{i}.png"], ["IMG_{i}.jpg", "DSC_{i}.jpg"], ["{i}.png"]])
def test_plain_file_names_are_not_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str], files: list[str]) -> None:
    root = _patients(tmp_path / "d", {cls: [f.format(i=i, cls=cls) for f in files for i in range(8)] for cls in ("cat", "dog")})
    load_dataset(f"folder:{root}")
    assert "encode a patient" not in capsys.readouterr().err


def test_split_folders_are_checked_and_carved_by_patient(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _patients(root / "train", {"cat": _by_patient("cat", range(10)), "dog": _by_patient("dog", range(10, 20))})
    _patients(root / "test", {"cat": _by_patient("cat", range(20, 23)), "dog": _by_patient("dog", range(23, 26))})
    ds = load_dataset(rf"folder:{root}?group=^(patient\d+)_")
    assert _groups_disjoint(ds) and len(ds.splits["test"]) == 12 and len(ds.splits["val"]) > 0
    assert len(list((root / "train").glob("fmprobe_split_v2_seed0_group-*.csv"))) == 1
    (root / "test" / "cat" / "patient3_c.png").write_bytes(b"")  # patient 3 is in train/
    with pytest.raises(DatasetError, match=r"patient 'patient3' .* both train/ and test/"):
        load_dataset(rf"folder:{root}?group=^(patient\d+)_")


def test_split_file_for_folders(tmp_path: Path) -> None:
    root = _patients(tmp_path / "d", {"cat": _by_patient("cat", range(6)), "dog": _by_patient("dog", range(6, 12))})
    ds = load_dataset(f"folder:{root}?split_file=../mysplit.csv")
    assert (tmp_path / "mysplit.csv").is_file() and not list(root.glob("fmprobe_split_*"))
    assert (tmp_path / "mysplit.csv").read_text().splitlines()[0] == "id,split"
    assert sum(len(s) for s in ds.splits.values()) == 24
    for split in ("train", "val", "test"):
        _patients(root / "full" / split, {"cat": ["x.png", "y.png"], "dog": ["z.png", "w.png"]})
    with pytest.raises(DatasetError, match="are all given: nothing is drawn"):
        load_dataset(f"folder:{root / 'full'}?split_file=s.csv")


def test_a_folder_with_a_hugging_face_metadata_csv_says_which_source_reads_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _patients(tmp_path / "d", {"cat": [f"{i}.png" for i in range(6)], "dog": [f"{i}.png" for i in range(6)]})
    (root / "metadata.csv").write_text("file_name,age\ncat/0.png,3\n")
    assert load_dataset(f"folder:{root}").num_images == 12
    assert f"Use imagefolder:{root} to read its labels and columns" in capsys.readouterr().err

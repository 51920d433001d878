"""CSV manifests with real columns: the spec's column roles, other columns kept as metadata, the group hint,
the split file's place, and which columns enter the content digest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _helpers import make_images, write_manifest

from fmprobe.datasets import load_dataset
from fmprobe.datasets.columns import metadata_key
from fmprobe.errors import DatasetError
from fmprobe.tasks import GROUP


def _by_id(ds, key: str) -> dict[str, str]:  # noqa: ANN001
    return {i: v for s in ds.splits.values() for i, v in zip(s.ids, s.metadata[key], strict=True)}


def _clinic(tmp_path: Path, n: int = 24, ages: list[str] | None = None, header: list[str] | None = None) -> tuple[Path, list[list[str]]]:
    """A manifest as clinics write them: file, dx, patient_id (3 images each), age (some empty), Site Name, fold."""
    labels = ["nevus", "melanoma"] * (n // 2)
    names = make_images(tmp_path / "img", labels)
    ages = ages or [str(30 + i) if i % 5 else "" for i in range(n)]
    rows = [[f"img/{f}", lab, f"P{i // 3:03d}", ages[i], "site A" if i % 2 else "site B", ("train", "val", "test")[(i // 3) % 3]]
            for i, (f, lab) in enumerate(zip(names, labels, strict=True))]  # fmt: skip
    header = header or ["file", "dx", "patient_id", "age", "Site Name", "fold"]
    return write_manifest(tmp_path / "labels.csv", header, rows), rows


def test_the_spec_maps_columns_and_every_other_column_is_kept_as_metadata(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, rows = _clinic(tmp_path)
    ds = load_dataset(f"csv:{manifest}?path=file&label=dx&group=patient_id&split=fold")
    assert ds.class_names == ("melanoma", "nevus") and ds.task == "binary"
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [9, 9, 6]
    assert set(ds.splits["train"].metadata) == {GROUP, "age", "site_name"}
    assert _by_id(ds, GROUP) == {r[0]: r[2] for r in rows}
    assert _by_id(ds, "age") == {r[0]: r[3] for r in rows} and _by_id(ds, "age")["img/img_0000.png"] == ""  # empty: unknown
    assert _by_id(ds, "site_name")["img/img_0001.png"] == "site A"
    assert "keeping column(s) age, 'Site Name' as site_name as sample metadata" in capsys.readouterr().err
    assert ds.name.startswith("labels[path=file,label=dx,group=patient_id,split=fold]-")


def test_a_column_that_looks_like_a_patient_id_is_suggested_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, rows = _clinic(tmp_path, header=["path", "label", "PatientID", "age", "site", "fold"])
    ungrouped = load_dataset(f"csv:{manifest}")
    err = capsys.readouterr().err
    assert err.count("Add ?group=PatientID") == 1 and "looks like a patient/study/lesion id" in err
    assert "PatientID" in err.split("keeping column(s)")[1]  # kept as metadata meanwhile
    load_dataset(f"csv:{manifest}")
    assert "Add ?group=" not in capsys.readouterr().err  # said once
    grouped = load_dataset(f"csv:{manifest}?group=PatientID")
    assert "Add ?group=" not in capsys.readouterr().err
    place = {i: name for name, s in grouped.splits.items() for i in s.ids}
    by_patient: dict[str, set[str]] = {}
    for r in rows:
        by_patient.setdefault(r[2], set()).add(place[r[0]])
    assert all(len(splits) == 1 for splits in by_patient.values())
    assert len(list(tmp_path.glob("labels.fmprobe_split_v2_seed0_group-*_70-15-15.csv"))) == 1  # its own split file
    # the group enters the digest through the split it draws; metadata never does
    assert grouped.content_digest != ungrouped.content_digest


def test_metadata_edits_keep_the_content_digest_and_reach_the_splits(tmp_path: Path) -> None:
    manifest, rows = _clinic(tmp_path)
    spec = f"csv:{manifest}?path=file&label=dx&group=patient_id&split=fold"
    before = load_dataset(spec)
    header = ["file", "dx", "patient_id", "age", "Site Name", "fold"]
    write_manifest(manifest, header, [[*r[:3], str(90 - i), "elsewhere", r[5]] for i, r in enumerate(rows)])
    after = load_dataset(spec)
    assert after.content_digest == before.content_digest  # metadata is not part of the feature cache key
    assert _by_id(after, "age")["img/img_0000.png"] == "90" and set(_by_id(after, "site_name").values()) == {"elsewhere"}
    write_manifest(manifest, header, [[*r[:5], "test" if i == 0 else r[5]] for i, r in enumerate(rows)])
    with pytest.raises(DatasetError, match="group 'P000' appears in both test and train"):
        load_dataset(spec)  # a split edit is checked against the groups ...
    write_manifest(manifest, header, [[*r[:2], f"Q{i}", *r[3:]] for i, r in enumerate(rows)])
    assert load_dataset(spec).content_digest == before.content_digest  # ... and regrouping a given split changes no data


def test_multilabel_columns_by_name_keep_the_rest_as_metadata(tmp_path: Path) -> None:
    names = make_images(tmp_path, ["a"] * 9)
    rows = [[n, i % 2, (i // 2) % 2, ("train", "val", "test")[i % 3], 40 + i] for i, n in enumerate(names)]
    manifest = write_manifest(tmp_path / "m.csv", ["path", "effusion", "edema", "split", "Age"], rows)
    with pytest.raises(DatasetError, match=r"column 'Age' has value '40'.*\?label=A,B"):
        load_dataset(f"csv:{manifest}")
    ds = load_dataset(f"csv:{manifest}?label=effusion,edema")
    assert ds.task == "multilabel" and ds.class_names == ("effusion", "edema")
    assert ds.splits["train"].metadata["age"] == ("40", "43", "46")


def test_an_empty_group_cell_is_its_own_group_said_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = ["a", "b"] * 10
    names = make_images(tmp_path, labels)
    rows = [[n, lab, "" if i < 4 else f"p{i // 4}"] for i, (n, lab) in enumerate(zip(names, labels, strict=True))]
    ds = load_dataset(f"csv:{write_manifest(tmp_path / 'm.csv', ['path', 'label', 'group'], rows)}")
    assert "4 row(s) with an empty 'group' (first: line 2); each is kept as its own group" in capsys.readouterr().err
    groups = _by_id(ds, GROUP)
    assert [groups[n] for n in names[:4]] == names[:4] and groups[names[4]] == "p1"


@pytest.mark.parametrize(
    "query, message",
    [
        ("path=file&label=fold_", r"label='fold_' is not a column \(closest: 'fold'\)"),
        ("path=file&label=dx&group=patient", r"group='patient' is not a column \(closest: 'patient_id'\)"),
        ("label=dx&path=dx", r"\['dx'\] named both as a label and as path"),
        ("path=file&label=dx&split=fold&split_file=s.csv", "split_file=s.csv but the split comes from the 'fold' column"),
        ("path=file&label=dx&split=age", r"unknown split names .* in 'age'"),
        ("path=file&label=dx,dx", "each 0/1 column once"),
    ],
)
def test_column_mistakes_name_the_option_and_the_fix(tmp_path: Path, query: str, message: str) -> None:
    manifest, _ = _clinic(tmp_path)
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"csv:{manifest}?{query}")


def test_two_columns_that_become_one_metadata_key_are_refused(tmp_path: Path) -> None:
    manifest, _ = _clinic(tmp_path, header=["path", "label", "group", "Age", "AGE", "split"])
    with pytest.raises(DatasetError, match=r"columns \['Age', 'AGE'\] all become metadata 'age'"):
        load_dataset(f"csv:{manifest}")
    manifest, _ = _clinic(tmp_path, header=["path", "label", "patient_id", "group", "site", "split"])
    with pytest.raises(DatasetError, match=r"column 'group' would be read as the group"):
        load_dataset(f"csv:{manifest}?group=patient_id")


def test_split_file_goes_where_the_spec_says_and_is_announced_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest, _ = _clinic(tmp_path)
    spec = f"csv:{manifest}?path=file&label=dx&group=patient_id"
    default = load_dataset(spec)
    saved = tmp_path / "labels.fmprobe_split_v2_seed0_group-"
    assert f"saved it to {saved}" in capsys.readouterr().err  # the default place: beside the data
    ds = load_dataset(f"{spec}&split_file=splits/mine.csv")
    assert (tmp_path / "splits" / "mine.csv").is_file()
    assert f"saved it to {tmp_path / 'splits' / 'mine.csv'}; every run reuses it" in capsys.readouterr().err
    again = load_dataset(f"{spec}&split_file={tmp_path / 'splits' / 'mine.csv'}")  # absolute: the same file
    assert "saved it to" not in capsys.readouterr().err
    assert again.splits["test"].ids == ds.splits["test"].ids == default.splits["test"].ids  # same seed, same draw
    assert "split_file=splits/mine.csv" in ds.name and "split_file" not in default.name
    assert np.array_equal(again.splits["train"].labels, ds.splits["train"].labels)


@pytest.mark.parametrize(
    "column, key",
    [("Patient ID", "patient_id"), ("Age (years)", "age_years"), ("2nd read", "col_2nd_read"), ("ÄÖ", "col"), ("site", "site")],
)
def test_metadata_keys_are_normalised(column: str, key: str) -> None:
    assert metadata_key(column) == key

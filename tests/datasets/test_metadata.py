"""The paper adapters' per-sample metadata (``Split.metadata``): the keys and value spellings the subgroup metrics
read, aligned with the ids in every split, lower-case with "" for unknown, and never part of the cache key; on the
real ISIC 2019 and CBIS-DDSM label files, the counts per value equal pandas' on the published CSVs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _datasets_layouts import random_image, write_csv
from _helpers import shared_file
from PIL import Image
from test_datasets_cbis_ddsm import cbis_jpeg  # noqa: F401  (fixtures of the published layouts)
from test_datasets_chexpert import chexpert_dir  # noqa: F401

from fmprobe.datasets import cbis_ddsm, isic2019, load_dataset
from fmprobe.datasets.base import Dataset, metadata_value
from fmprobe.errors import DatasetError
from fmprobe.tasks import GROUP

ISIC_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
ISIC_META = ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
LESIONS = ("BCN_{:07d}", "HAM_{:07d}", "MSK4_{:07d}", "")  # the three prefixes of the real file, and none


def by_id(dataset: Dataset) -> dict[str, dict[str, str]]:
    """Every sample's metadata, from whichever split holds it (checks one value per id on the way)."""
    out: dict[str, dict[str, str]] = {}
    for split in dataset.splits.values():
        assert all(len(values) == len(split.ids) for values in split.metadata.values())
        for n, sample in enumerate(split.ids):
            out[sample] = {key: values[n] for key, values in split.metadata.items()}
    return out


def _isic_row(i: int) -> list[object]:
    lesion = LESIONS[i % 4].format(i // 2)
    return [f"ISIC_{i:07d}", "" if i % 7 == 0 else f"{5 * (i % 18)}.0", ["head/neck", "", "anterior torso"][i % 3],
            lesion, ["female", "male", ""][i % 3]]  # fmt: skip


@pytest.fixture
def isic_dir(tmp_path: Path) -> Path:
    root = tmp_path / "isic"
    (root / "ISIC_2019_Training_Input").mkdir(parents=True)
    truth = []
    for i in range(40):
        truth.append([f"ISIC_{i:07d}"] + [f"{float(c == i % 4):.1f}" for c in range(9)])
        Image.fromarray(random_image(i)).save(root / "ISIC_2019_Training_Input" / f"ISIC_{i:07d}.jpg")
    write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image"] + ISIC_COLUMNS, truth)
    write_csv(root / "ISIC_2019_Training_Metadata.csv", ISIC_META, [_isic_row(i) for i in range(40)])
    return root


def test_metadata_value_spelling() -> None:
    assert [metadata_value(v) for v in (" Male ", "55.0", "55", "LEFT", "Unknown", "", "head/neck", "0.5")] == [
        "male", "55", "55", "left", "", "", "head/neck", "0.5",
    ]  # fmt: skip


def test_isic_metadata_per_sample(isic_dir: Path) -> None:
    ds = load_dataset(f"isic2019:{isic_dir}")
    meta = by_id(ds)
    assert len(meta) == 40 and all(set(m) == {"age", "sex", "site", "archive", GROUP} for m in meta.values())
    for i in range(40):
        m = meta[f"ISIC_{i:07d}"]
        assert m["age"] == ("" if i % 7 == 0 else str(5 * (i % 18)))  # "45.0" stored as "45"
        assert (m["sex"], m["site"]) == (["female", "male", ""][i % 3], ["head/neck", "", "anterior torso"][i % 3])
        assert m["archive"] == ["bcn20000", "ham10000", "msk", ""][i % 4]  # no lesion_id: source unknown
        assert m[GROUP] == (f"image:ISIC_{i:07d}" if i % 4 == 3 else f"lesion:{LESIONS[i % 4].format(i // 2)}")
    flat = by_id(load_dataset(f"isic2019:{isic_dir}?grouping=none"))  # the file is read when present ...
    assert all(m == {k: v for k, v in meta[i].items() if k != GROUP} for i, m in flat.items())
    (isic_dir / "ISIC_2019_Training_Metadata.csv").unlink()  # ... and not needed when absent
    assert all(not s.metadata for s in load_dataset(f"isic2019:{isic_dir}?grouping=none").splits.values())


def test_isic_metadata_is_not_in_the_key_but_lesions_are(isic_dir: Path) -> None:
    meta_file = isic_dir / "ISIC_2019_Training_Metadata.csv"
    keys = {g: load_dataset(f"isic2019:{isic_dir}?grouping={g}").content_digest for g in ("lesion", "none")}
    rows = [_isic_row(i) for i in range(40)]
    edited = [[r[0], "85", "palms/soles", r[3], "male"] for r in rows]  # every age, site and sex changed
    write_csv(meta_file, ISIC_META, edited)
    for grouping, key in keys.items():
        ds = load_dataset(f"isic2019:{isic_dir}?grouping={grouping}")
        assert ds.content_digest == key and {m["sex"] for m in by_id(ds).values()} == {"male"}
    edited[0][3] = "BCN_9999999"  # a lesion id is the lesion grouping's unit: its key changes, the image-level one not
    write_csv(meta_file, ISIC_META, edited)
    assert load_dataset(f"isic2019:{isic_dir}").content_digest != keys["lesion"]
    assert load_dataset(f"isic2019:{isic_dir}?grouping=none").content_digest == keys["none"]
    write_csv(meta_file, ISIC_META, edited[1:])  # present but incomplete: refused whatever the grouping
    with pytest.raises(DatasetError, match=r"Metadata\.csv: 1 image\(s\) .* have no metadata row.*ISIC_0000000"):
        load_dataset(f"isic2019:{isic_dir}?grouping=none")


def test_chexpert_metadata_per_sample(chexpert_dir: Path) -> None:  # noqa: F811
    ds = load_dataset(f"chexpert:{chexpert_dir}")
    for sample, m in by_id(ds).items():
        frontal = sample.endswith("frontal.jpg")
        assert m == {GROUP: sample.split("/")[2], "sex": "female", "age": "60",
                     "view": "frontal" if frontal else "lateral", "projection": "ap" if frontal else ""}  # fmt: skip
    key = ds.content_digest
    for name in ("train.csv", "valid.csv"):
        csv = chexpert_dir / name
        csv.write_bytes(csv.read_bytes().replace(b",Female,60,", b",Unknown,61,").replace(b",AP,", b",PA,"))
    again = load_dataset(f"chexpert:{chexpert_dir}")
    assert again.content_digest == key  # sex, age and projection are not in the key; Paths and labels are
    assert {(m["sex"], m["age"]) for m in by_id(again).values()} == {("", "61")}
    assert {m["projection"] for m in by_id(again).values()} == {"pa", ""}
    assert set(load_dataset(f"chexpert:{chexpert_dir}?frontal=1").splits["test"].metadata) == {
        GROUP, "sex", "age", "view", "projection",
    }  # fmt: skip


def test_chexpert_without_the_optional_columns(chexpert_dir: Path) -> None:  # noqa: F811
    for name in ("train.csv", "valid.csv"):
        csv = chexpert_dir / name
        lines = csv.read_bytes().decode().split("\r\n")
        cut = [",".join(c for n, c in enumerate(line.split(",")) if n not in (1, 2, 4)) for line in lines]
        csv.write_bytes("\r\n".join(cut).encode())  # Sex, Age and AP/PA dropped: their keys are left out, nothing guessed
    ds = load_dataset(f"chexpert:{chexpert_dir}")
    assert all(set(s.metadata) == {GROUP, "view"} for s in ds.splits.values())


def test_cbis_ddsm_metadata_per_sample(cbis_jpeg: Path) -> None:  # noqa: F811
    ds = load_dataset(f"cbis-ddsm:{cbis_jpeg}")
    for sample, m in by_id(ds).items():
        kind, patient, side, view = sample.split("_")[0], "_".join(sample.split("_")[1:3]), *sample.split("_")[3:5]
        assert m == {GROUP: patient, "density": "3", "abnormality": "mass" if kind.startswith("Mass") else "calcification",
                     "view": view.lower(), "side": side.lower()}  # fmt: skip
    full = load_dataset(f"cbis-ddsm:{cbis_jpeg}?image=full")
    assert set(by_id(full)["Mass-Training_P_00002_LEFT_CC"].items()) >= {("side", "left"), ("view", "cc")}
    key = ds.content_digest
    mass_train = cbis_jpeg / "csv" / cbis_ddsm.CSV_FILES[("mass", "train")]
    text = mass_train.read_bytes().decode()
    first, rest = text.split("\r\n", 1)
    mass_train.write_bytes((first + "\r\n" + rest.replace(",3,LEFT,CC,2,", ",4,LEFT,CC,2,")).encode())  # P_00002's second mass
    assert load_dataset(f"cbis-ddsm:{cbis_jpeg}").content_digest == key  # density is not in the key
    assert by_id(load_dataset(f"cbis-ddsm:{cbis_jpeg}"))["Mass-Training_P_00002_LEFT_CC_2"]["density"] == "4"
    with pytest.raises(DatasetError, match=r"mammogram Mass-Training_P_00002_LEFT_CC has .*'density': '4'.* must agree"):
        load_dataset(f"cbis-ddsm:{cbis_jpeg}?image=full")


def _pandas_counts(column: object) -> Counter[str]:
    """pandas' value counts of a published column in the adapters' spelling (lower-case, whole numbers, "" = NaN)."""
    values = column.astype(object).fillna("").astype(str).str.strip().str.lower().str.replace(r"^(\d+)\.0$", r"\1", regex=True)  # type: ignore[attr-defined]
    return Counter({str(k): int(v) for k, v in values.value_counts().items()})


def test_real_isic2019_metadata_counts_equal_pandas() -> None:
    pd = pytest.importorskip("pandas")
    root = shared_file("isic2019/ISIC_2019_Training_Metadata.csv").parent
    table = pd.read_csv(root / isic2019.METADATA).set_index("image")
    ids = table.index.tolist()  # the ground truth lists the same ids in the same order (PROVENANCE.md)
    meta = isic2019.read_metadata(root, ids)
    for key, column in (("sex", "sex"), ("age", "age_approx"), ("site", "anatom_site_general")):
        assert Counter(meta[key]) == _pandas_counts(table[column]), key
    assert Counter(meta["sex"]) == {"male": 13286, "female": 11661, "": 384}
    assert Counter(meta["age"])["85"] == 1319 and Counter(meta["age"])[""] == 437
    prefix = table["lesion_id"].str.extract(r"^([A-Z]+\d?)_")[0].fillna("")
    assert Counter(meta["archive"]) == {
        {"BCN": "bcn20000", "HAM": "ham10000", "MSK4": "msk", "": ""}[p]: n for p, n in prefix.value_counts().items()
    } == {"bcn20000": 12413, "ham10000": 10015, "msk": 819, "": 2084}
    assert len(set(meta[GROUP])) == 11847 + 2084  # lesions, and images without one


def test_real_cbis_ddsm_metadata_counts_equal_pandas() -> None:
    pd = pytest.importorskip("pandas")
    root = shared_file("cbis-ddsm/mass_case_description_train_set.csv").parent
    samples = cbis_ddsm.read_labels(root)
    frames = []
    for name in cbis_ddsm.CSV_FILES.values():
        frame = pd.read_csv(root / name)
        frames.append(frame.rename(columns={c: c.lower().replace("_", " ").strip() for c in frame.columns}))
    table = pd.concat(frames)
    for key, column in cbis_ddsm.META_COLUMNS.items():
        assert Counter(s.metadata[key] for s in samples) == _pandas_counts(table[column]), key
    assert Counter(s.metadata["density"] for s in samples)["0"] == 2  # as published: not a BI-RADS density
    assert np.all([s.metadata["abnormality"] == {"mass": "mass", "calc": "calcification"}[s.abnormality] for s in samples])

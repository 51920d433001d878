"""CBIS-DDSM in both published layouts (TCIA DICOM and the Kaggle JPEG conversion): crop and full-mammogram
samples, the patient-grouped carve, file choice in ambiguous case folders; the real case descriptions parsed in
full when present."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _datasets_layouts import needs_pydicom, write_csv, write_dicom
from _helpers import shared_file
from PIL import Image

from fmprobe.datasets import cbis_ddsm, load_dataset
from fmprobe.datasets.splits import grouped_stratified_split
from fmprobe.errors import DatasetError

MASS_HEADER = [
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id", "abnormality type",
    "mass shape", "mass margins", "assessment", "pathology", "subtlety", "image file path", "cropped image file path",
    "ROI mask file path",
]  # fmt: skip
CALC_HEADER = [h.replace("breast_density", "breast density").replace("mass shape", "calc type")
               .replace("mass margins", "calc distribution") for h in MASS_HEADER]  # fmt: skip


def _uid(n: int) -> str:
    return f"1.3.6.1.4.1.9590.100.1.2.{n}"


def _cases() -> list[tuple[str, str, str, str, int, str]]:
    """(abnormality type, official split, patient, side_view, abnormality id, pathology)."""
    cases = []
    for p in range(1, 17):  # mass training: 8 malignant, 8 benign patients
        pathology = "MALIGNANT" if p % 2 else ("BENIGN" if p % 4 else "BENIGN_WITHOUT_CALLBACK")
        cases.append(("mass", "train", f"P_{p:05d}", "LEFT_CC", 1, pathology))
    cases.append(("mass", "train", "P_00002", "LEFT_CC", 2, "MALIGNANT"))  # a second abnormality on one view
    cases += [("mass", "test", "P_00101", "RIGHT_MLO", 1, "MALIGNANT"), ("mass", "test", "P_00102", "LEFT_CC", 1, "BENIGN")]
    cases += [("calc", "train", p, "RIGHT_CC", 1, lab) for p, lab in (("P_00020", "MALIGNANT"), ("P_00021", "BENIGN"))]
    cases.append(("calc", "train", "P_00101", "LEFT_MLO", 1, "BENIGN_WITHOUT_CALLBACK"))  # also in mass test
    cases += [("calc", "test", p, "LEFT_CC", 1, lab) for p, lab in (("P_00030", "MALIGNANT"), ("P_00031", "BENIGN"))]
    return cases


def _case_rows(
    root_csv: Path, cases: list[tuple[str, str, str, str, int, str]]
) -> dict[tuple[str, str, int], tuple[str, str]]:
    """Write the four CSVs; returns {(case type, full folder, abnormality id): (full folder, crop folder)}."""
    tables: dict[tuple[str, str], list[list[object]]] = {k: [] for k in cbis_ddsm.CSV_FILES}
    folders = {}
    for n, (kind, split, patient, side_view, abn, pathology) in enumerate(cases):
        prefix = f"{kind.capitalize()}-{'Training' if split == 'train' else 'Test'}"
        full = f"{prefix}_{patient}_{side_view}"
        crop = f"{full}_{abn}"
        full_path = f"{full}/{_uid(1000 + n)}/{_uid(2000 + n)}/000000.dcm"
        crop_dir = f"{crop}/{_uid(3000 + n)}/{_uid(4000 + n)}"
        side, view = side_view.split("_")
        crop_cell, mask_cell = f"{crop_dir}/000000.dcm", f"{crop_dir}/000001.dcm\n"  # mass: newline in the mask path
        if kind == "calc":
            crop_cell, mask_cell = f"{crop_dir}/000001.dcm\n", f"{crop_dir}/000000.dcm"  # calc: in the crop path
        tables[(kind, split)].append(
            [patient, 3, side, view, abn, "mass" if kind == "mass" else "calcification", "OVAL", "CIRCUMSCRIBED", 4,
             pathology, 3, full_path, crop_cell, mask_cell]  # fmt: skip
        )
        folders[(kind, full, abn)] = (full, crop)
    for (kind, split), rows in tables.items():
        write_csv(root_csv / cbis_ddsm.CSV_FILES[(kind, split)], MASS_HEADER if kind == "mass" else CALC_HEADER, rows)
    return folders


@pytest.fixture
def cbis_tcia(tmp_path: Path) -> Path:
    """TCIA layout: CSVs beside CBIS-DDSM/; mass cases in the 'descriptive' folder layout (one series per kind),
    calc cases in the 'classic' one (crop and mask in one UID folder, names not telling which is which)."""
    root = tmp_path / "tcia"
    folders = _case_rows(root, _cases())
    base = root / "CBIS-DDSM"
    rng = np.random.default_rng(0)
    done: set[str] = set()
    for i, ((kind, full, _), (_, crop)) in enumerate(sorted(folders.items())):
        mammogram = rng.integers(200, 3800, (40, 30)).astype(np.uint16)
        crop_pixels = rng.integers(500, 60000, (12, 10)).astype(np.uint16)
        mask = np.zeros((40, 30), np.uint8)
        mask[10:22, 5:15] = 255
        if kind == "mass":
            if full not in done:
                write_dicom(base / full / "07-20-2016-DDSM-1" / "1.000000-full mammogram images-1" / "1-1.dcm",
                            mammogram, bits_stored=12)  # fmt: skip
            study = base / crop / "07-21-2016-DDSM-NA-2"
            write_dicom(study / "1.000000-ROI mask images-3" / "1-1.dcm", mask)
            write_dicom(study / "1.000000-cropped images-4" / "1-1.dcm", crop_pixels)
        else:
            if full not in done:
                write_dicom(base / full / _uid(9) / _uid(10 + i) / "000000.dcm", mammogram, window=(2000, 3000))
            series = base / crop / _uid(11) / _uid(100 + i)
            description = "ROI mask images" if i % 2 else None  # both files carry the same series description
            write_dicom(series / "000000.dcm", mask, series=description)
            write_dicom(series / "000001.dcm", crop_pixels, "MONOCHROME1", series=description)
        done.add(full)
    return root


@needs_pydicom
def test_cbis_tcia_crops_labels_and_patient_split(cbis_tcia: Path) -> None:
    ds = load_dataset(f"cbis-ddsm:{cbis_tcia}")
    assert ds.task == "binary" and ds.class_names == ("benign", "malignant") and ds.primary_metric == "roc_auc"
    assert ds.image_conversion == "dicom-window:v1:dicom" and ds.extra["layout"] == "tcia-dicom"
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 20 and len(ds.splits["test"]) == 4
    assert len(ds.splits["val"]) >= 2
    patient = {s.id: s.patient for s in cbis_ddsm.read_labels(cbis_tcia)}
    train_val = ds.splits["train"].ids + ds.splits["val"].ids
    assert not {patient[i] for i in ds.splits["train"].ids} & {patient[i] for i in ds.splits["val"].ids}
    assert ds.extra["patients_in_train_and_test"] == 1  # P_00101: mass in test, calc in train (as in the real CSVs)
    labels = {i: int(lab) for s in ds.splits.values() for i, lab in zip(s.ids, s.labels, strict=True)}
    assert labels["Calc-Training_P_00101_LEFT_MLO_1"] == 0 and labels["Mass-Training_P_00002_LEFT_CC_2"] == 1
    assert labels["Mass-Training_P_00004_LEFT_CC_1"] == 0  # BENIGN_WITHOUT_CALLBACK is benign
    for split in ds.splits.values():  # the crop is chosen (12x10), never the full-size ROI mask, in both layouts
        for k in range(len(split)):
            assert split.source.load(k).size == (10, 12), split.source.describe(k)
    assert any("000001.dcm" in split.source.describe(k) for split in ds.splits.values() for k in range(len(split)))
    assert "Calc-Training_P_00101_LEFT_MLO_1" in train_val
    dropped = load_dataset(f"cbis-ddsm:{cbis_tcia}?overlap=drop")
    assert "Calc-Training_P_00101_LEFT_MLO_1" not in dropped.splits["train"].ids + dropped.splits["val"].ids
    assert dropped.splits["test"].ids == ds.splits["test"].ids
    mass = load_dataset(f"cbis-ddsm:{cbis_tcia}?abnormality=mass&window=percentile&percentiles=1,99")
    assert all(i.startswith("Mass-") for s in mass.splits.values() for i in s.ids)
    assert mass.image_conversion == "dicom-window:v1:percentile:1-99"
    assert mass.content_digest != ds.content_digest


@needs_pydicom
def test_cbis_full_mammograms_are_malignant_if_any_abnormality_is(cbis_tcia: Path) -> None:
    ds = load_dataset(f"cbis-ddsm:{cbis_tcia}?image=full")
    labels = {i: int(lab) for s in ds.splits.values() for i, lab in zip(s.ids, s.labels, strict=True)}
    assert len(labels) == 23  # 24 abnormalities on 23 views
    assert labels["Mass-Training_P_00002_LEFT_CC"] == 1  # abnormality 1 benign, abnormality 2 malignant
    assert ds.splits["test"].source.load(0).size == (30, 40)
    assert (cbis_tcia / "cbis-ddsm_full.fmprobe_split_v2_seed0_85-15-0.csv").exists()


@needs_pydicom
def test_cbis_named_errors(cbis_tcia: Path) -> None:
    csv_path = cbis_tcia / "mass_case_description_train_set.csv"
    original = csv_path.read_text()
    shutil.rmtree(cbis_tcia / "CBIS-DDSM" / "Mass-Training_P_00003_LEFT_CC_1")
    with pytest.raises(DatasetError, match=r"1 case folder\(s\).*missing, e\.g\. Mass-Training_P_00003_LEFT_CC_1 \(.*mass_case_description_train_set\.csv, line 6\)"):
        load_dataset(f"cbis-ddsm:{cbis_tcia}")  # its record starts on physical line 6: each spans two lines
    load_dataset(f"cbis-ddsm:{cbis_tcia}?abnormality=calc")  # the other case type still loads
    csv_path.write_text(original.replace("MALIGNANT", "MALIGNANT?", 1))
    with pytest.raises(DatasetError, match=r"line 2: pathology 'MALIGNANT\?' is not one of MALIGNANT, BENIGN"):
        cbis_ddsm.read_labels(cbis_tcia)
    csv_path.write_text(original.replace("cropped image file path", "crop path"))
    with pytest.raises(DatasetError, match=r"missing column\(s\) \['cropped image file path'\]"):
        cbis_ddsm.read_labels(cbis_tcia)
    csv_path.unlink()
    with pytest.raises(DatasetError, match=r"mass_case_description_train_set\.csv not found: CBIS-DDSM comes as"):
        load_dataset(f"cbis-ddsm:{cbis_tcia}")
    with pytest.raises(DatasetError, match=r"image='roi'; use one of crop, full"):
        load_dataset(f"cbis-ddsm:{cbis_tcia}?image=roi")


def test_cbis_ambiguous_case_folder_is_named(tmp_path: Path) -> None:
    same = [cbis_ddsm.Candidate(tmp_path / "a.dcm", None, 100), cbis_ddsm.Candidate(tmp_path / "b.dcm", None, 100)]
    with pytest.raises(DatasetError, match=r"case_1: cannot tell which file is the cropped images \(2 candidates"):
        cbis_ddsm.choose_file(same, "crop", "case_1")
    only_mask = [cbis_ddsm.Candidate(tmp_path / "m.dcm", "mask", 100)]
    with pytest.raises(DatasetError, match=r"case_1: no cropped images among its 1 file\(s\) \(found: ROI mask images\)"):
        cbis_ddsm.choose_file(only_mask, "crop", "case_1")


@pytest.fixture
def cbis_jpeg(tmp_path: Path) -> Path:
    """The Kaggle JPEG conversion: csv/ (four CSVs + dicom_info.csv) and jpeg/<SeriesInstanceUID>/1-N.jpg."""
    root = tmp_path / "cbis-jpeg"
    folders = _case_rows(root / "csv", _cases())
    info = []
    n = 0

    def add(case: str, description: str, size: tuple[int, int]) -> None:
        nonlocal n
        n += 1
        uid = _uid(50_000 + n)
        (root / "jpeg" / uid).mkdir(parents=True)
        Image.fromarray(np.full(size, 90, np.uint8)).save(root / "jpeg" / uid / f"1-{n}.jpg")
        info.append([f"CBIS-DDSM/dicom/{uid}/1-{n}.dcm", f"CBIS-DDSM/jpeg/{uid}/1-{n}.jpg", case, description,
                     uid, size[0], size[1]])  # fmt: skip

    for i, (_, (full, crop)) in enumerate(sorted(folders.items())):
        if not any(r[2] == full for r in info):
            add(full, "full mammogram images", (40, 30))
        blank = i % 3 == 0  # some rows of the real file leave SeriesDescription empty
        add(crop, "" if blank else "ROI mask images", (40, 30))
        add(crop, "" if blank else "cropped images", (12, 10))
    write_csv(root / "csv" / "dicom_info.csv",
               ["file_path", "image_path", "PatientID", "SeriesDescription", "SeriesInstanceUID", "Rows", "Columns"],
               info)  # fmt: skip
    return root


def test_cbis_jpeg_conversion_layout(cbis_jpeg: Path) -> None:
    ds = load_dataset(f"cbis-ddsm:{cbis_jpeg}")
    assert ds.extra["layout"] == "jpeg" and ds.image_conversion == "pil-rgb8-exif"
    assert sum(len(s) for s in ds.splits.values()) == 24
    for split in ds.splits.values():
        assert all(split.source.load(k).size == (10, 12) for k in range(len(split)))
    full = load_dataset(f"cbis-ddsm:{cbis_jpeg}?image=full")
    assert full.splits["train"].source.load(0).size == (30, 40)
    tcia_ids = {i for s in ds.splits.values() for i in s.ids}
    assert tcia_ids == {s.id for s in cbis_ddsm.read_labels(cbis_jpeg)}
    with pytest.raises(DatasetError, match=r"window/percentiles apply to the TCIA DICOM download"):
        load_dataset(f"cbis-ddsm:{cbis_jpeg}?window=minmax")
    next((cbis_jpeg / "jpeg").rglob("1-3.jpg")).unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) named in dicom_info\.csv are missing.*1-3\.jpg"):
        load_dataset(f"cbis-ddsm:{cbis_jpeg}")


def test_real_cbis_ddsm_case_descriptions() -> None:
    root = shared_file("cbis-ddsm/mass_case_description_train_set.csv").parent
    rows = cbis_ddsm.read_rows(root)
    per_file = Counter((s.abnormality, s.official) for s, _ in rows)
    assert per_file == {("mass", "train"): 1318, ("mass", "test"): 378, ("calc", "train"): 1546, ("calc", "test"): 326}
    crops = cbis_ddsm.read_labels(root)
    assert len(crops) == 3568 and all(s.id == s.id.strip() and "/" not in s.id for s in crops)  # newline-ended cells
    malignant = Counter((s.abnormality, s.official) for s in crops if s.label == 1)
    assert malignant == {("mass", "train"): 637, ("mass", "test"): 147, ("calc", "train"): 544, ("calc", "test"): 129}
    full = cbis_ddsm.read_labels(root, image="full")
    assert len(full) == 3103 and Counter(s.official for s in full) == {"train": 2458, "test": 645}
    assert len(cbis_ddsm.read_labels(root, abnormality="mass")) == 1696
    train = [s for s in crops if s.official == "train"]
    test_patients = {s.patient for s in crops if s.official == "test"}
    assert len({s.patient for s in train} & test_patients) == 31  # mass in one set, calc in the other
    carve = grouped_stratified_split(
        np.asarray([s.label for s in train]), [s.patient for s in train], cbis_ddsm.CARVE, seed=0
    )
    where: dict[str, int] = {}
    assert all(where.setdefault(s.patient, int(a)) == a for s, a in zip(train, carve, strict=True))
    assert 0.12 < np.mean(carve == 1) < 0.18 and not (carve == 2).any()


def _swap(folder: Path, a: str, b: str) -> None:
    (folder / a).rename(folder / "swap.tmp")
    (folder / b).rename(folder / a)
    (folder / "swap.tmp").rename(folder / b)


def test_cbis_swapped_case_descriptions_are_refused(cbis_jpeg: Path) -> None:
    csv_folder = cbis_jpeg / "csv"
    train, test = cbis_ddsm.CSV_FILES[("mass", "train")], cbis_ddsm.CSV_FILES[("mass", "test")]
    _swap(csv_folder, train, test)
    with pytest.raises(DatasetError, match=rf"{train}: holds Mass-Test_ case folders .*name says Mass-Training_ "
                       rf"cases\. The files are swapped or renamed: put {train} back as {test}"):
        load_dataset(f"cbis-ddsm:{cbis_jpeg}")
    _swap(csv_folder, train, test)
    calc_train = cbis_ddsm.CSV_FILES[("calc", "train")]
    original = (csv_folder / calc_train).read_text()
    (csv_folder / calc_train).write_text(original.replace("Calc-Training_P_00021", "Calc-Test_P_00021"))
    with pytest.raises(DatasetError, match=rf"{calc_train}, line 4: case folder Calc-Test_P_00021_RIGHT_CC_1 is a "
                       r"Calc-Test_ case, but .* holds the Calc-Training_ cases; its rows come from more than one"):
        load_dataset(f"cbis-ddsm:{cbis_jpeg}")
    (csv_folder / calc_train).write_text(original.replace("Calc-Training_P_00021", "Calcs_P_00021"))
    with pytest.raises(DatasetError, match=r"line 4: 'cropped image file path' is 'Calcs_P_00021.*whose name starts"):
        load_dataset(f"cbis-ddsm:{cbis_jpeg}")


def _real_case_descriptions(tmp_path: Path) -> Path:
    source = shared_file("cbis-ddsm/mass_case_description_train_set.csv").parent
    for name in cbis_ddsm.CSV_FILES.values():
        shutil.copy(source / name, tmp_path / name)
    return tmp_path


def test_real_cbis_ddsm_swapped_files_are_refused(tmp_path: Path) -> None:
    root = _real_case_descriptions(tmp_path)
    for abnormality, prefix in (("mass", "Mass"), ("calc", "Calc")):
        train, test = cbis_ddsm.CSV_FILES[(abnormality, "train")], cbis_ddsm.CSV_FILES[(abnormality, "test")]
        _swap(root, train, test)
        with pytest.raises(DatasetError, match=rf"{train}: holds {prefix}-Test_ case folders \(e\.g\. "
                           rf"{prefix}-Test_P_\d+_\w+, .*line 2\).*put {train} back as {test}"):
            cbis_ddsm.read_rows(root)
        _swap(root, train, test)
    mass_train, calc_train = cbis_ddsm.CSV_FILES[("mass", "train")], cbis_ddsm.CSV_FILES[("calc", "train")]
    _swap(root, mass_train, calc_train)  # the case type swapped: the columns almost agree, the case folders do not
    with pytest.raises(DatasetError, match=rf"{mass_train}: holds Calc-Training_ .*put {mass_train} back as {calc_train}"):
        cbis_ddsm.read_rows(root)


def test_real_cbis_ddsm_errors_name_the_physical_line(tmp_path: Path) -> None:
    root = _real_case_descriptions(tmp_path)
    path = root / cbis_ddsm.CSV_FILES[("mass", "train")]
    lines = path.read_bytes().decode().split("\n")
    third = [i for i, line in enumerate(lines) if line.startswith("P_")][2]  # where the third record starts
    assert third + 1 > 4  # records span two lines in the published file, so line != record number
    lines[third] = lines[third].replace("MALIGNANT", "MALIGNANT?").replace("BENIGN", "BENIGN?")
    path.write_bytes("\n".join(lines).encode())
    with pytest.raises(DatasetError, match=rf"{path.name}, line {third + 1}: pathology '\w+\?' is not one of"):
        cbis_ddsm.read_rows(root)

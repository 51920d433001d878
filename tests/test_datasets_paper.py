"""The study's four datasets read in their publishers' layouts: APTOS 2019, ISIC 2019, CBIS-DDSM (TCIA DICOM and the
JPEG conversion), CheXpert; plus DICOM windowing. Fixtures are tiny copies of each layout (real column names, real
quirks) with generated images; the real ISIC 2019 and CBIS-DDSM label files are parsed in full when present."""

from __future__ import annotations

import csv
import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _helpers import shared_file, write_png
from PIL import Image

from fmprobe.datasets import aptos2019, cbis_ddsm, chexpert, isic2019, load_dataset
from fmprobe.datasets.dicom import DicomSource, conversion_tag, dicom_to_image
from fmprobe.datasets.splits import grouped_stratified_split
from fmprobe.errors import DatasetError, ImageError

needs_pydicom = pytest.mark.skipif(
    importlib.util.find_spec("pydicom") is None, reason="pydicom is not installed (pip install pydicom): DICOM tests skipped"
)


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")  # the published files use CRLF
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _image(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)


def _groups_disjoint(ds, group_of) -> bool:  # noqa: ANN001
    seen: dict[str, str] = {}
    for name, split in ds.splits.items():
        for sample_id in split.ids:
            if seen.setdefault(group_of(sample_id), name) != name:
                return False
    return True


# ---------------------------------------------------------------- DICOM ----------------------------------------------


def write_dicom(
    path: Path,
    array: np.ndarray,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: tuple[float, float] | None = None,
    rescale: tuple[float, float] | None = None,
    series: str | None = None,
) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = array.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if array.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(array).tobytes()
    if series:
        ds.SeriesDescription = series
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _grey(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    array = np.asarray(image)
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    return array[..., 0]


@needs_pydicom
def test_dicom_16bit_minmax_and_monochrome1_inversion(tmp_path: Path) -> None:
    ramp = np.linspace(100, 4000, 64, dtype=np.uint16).reshape(8, 8)  # 12-bit values in 16-bit words
    plain = _grey(dicom_to_image(write_dicom(tmp_path / "m2.dcm", ramp, bits_stored=12)))
    assert plain.min() == 0 and plain.max() == 255 and plain[0, 0] == 0 and plain[-1, -1] == 255
    inverted = _grey(dicom_to_image(write_dicom(tmp_path / "m1.dcm", ramp, "MONOCHROME1", bits_stored=12)))
    assert (inverted == 255 - plain).all()  # high values are dark in MONOCHROME1


@needs_pydicom
def test_dicom_window_rescale_and_percentile(tmp_path: Path) -> None:
    stored = np.array([[0, 990, 1040, 1080], [2000, 2000, 2000, 2000]], dtype=np.int16)
    # modality values = 2 * stored - 1000 -> -1000, 980, 1080, 1160; 3000; window centre 1080, width 161
    path = write_dicom(tmp_path / "w.dcm", stored, window=(1080, 161), rescale=(2, -1000))
    grey = _grey(dicom_to_image(path))
    assert grey[0, 0] == 0 and grey[0, 1] == 0 and grey[0, 3] == 255 and grey[1, 0] == 255
    assert abs(int(grey[0, 2]) - 128) <= 1  # the window centre maps to mid-grey
    minmax = _grey(dicom_to_image(path, window="minmax"))
    assert minmax[0, 0] == 0 and minmax[1, 0] == 255 and 100 < minmax[0, 2] < 140
    spike = np.full((20, 20), 500, dtype=np.uint16)
    spike[10:] = 1500
    spike[0, 0] = 60000  # a burnt-in marker: min-max would crush the tissue, percentiles clip it
    p = _grey(dicom_to_image(write_dicom(tmp_path / "p.dcm", spike), window="percentile", percentiles=(1, 99)))
    assert p[1, 1] == 0 and p[19, 19] == 255 and p[0, 0] == 255
    assert _grey(dicom_to_image(tmp_path / "p.dcm", window="minmax"))[19, 19] < 10
    assert conversion_tag() == "dicom-window:v1:dicom"
    assert conversion_tag("percentile", (1, 99)) == "dicom-window:v1:percentile:1-99"


@needs_pydicom
def test_dicom_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"gone\.dcm: DICOM file not found"):
        dicom_to_image(tmp_path / "gone.dcm")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom at all" * 20)
    with pytest.raises(ImageError, match=r"bad\.dcm"):
        DicomSource((bad,)).load(0)
    with pytest.raises(DatasetError, match="window mode"):
        DicomSource((bad,), window="auto")


# ---------------------------------------------------------------- APTOS 2019 -----------------------------------------


@pytest.fixture
def aptos_dir(tmp_path: Path) -> Path:
    root = tmp_path / "aptos2019-blindness-detection"
    rows = []
    for i in range(30):
        id_code = f"{i * 7919:012x}"
        rows.append([id_code, i % 5])
        write_png(root / "train_images" / f"{id_code}.png", _image(i))
    _write_csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    _write_csv(root / "test.csv", ["id_code"], [["ffff00001111"]])  # present in the download, ignored
    return root


def test_aptos_parses_ordinal_with_persisted_stratified_split(aptos_dir: Path) -> None:
    ds = load_dataset(f"aptos2019:{aptos_dir}")
    assert ds.task == "ordinal" and ds.primary_metric == "quadratic_kappa"
    assert ds.class_names == ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 20, "val": 5, "test": 5}
    assert all(sorted(set(v.labels.tolist())) == [0, 1, 2, 3, 4] for v in ds.splits.values())
    assert (aptos_dir / "train.fmprobe_split_seed0_70-15-15.csv").exists()
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


# ---------------------------------------------------------------- ISIC 2019 ------------------------------------------

ISIC_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


@pytest.fixture
def isic_dir(tmp_path: Path) -> Path:
    root = tmp_path / "isic"
    truth, meta = [], []
    for i in range(80):
        name = f"ISIC_{i:07d}" + ("_downsampled" if i % 9 == 0 else "")
        label = (i // 2) % 8  # pairs of images share a class and (mostly) a lesion
        truth.append([name] + [f"{float(c == label):.1f}" for c in range(9)])
        lesion = "" if i % 10 == 3 else f"IL_{i // 2:07d}"
        meta.append([name, 45, "anterior torso", lesion, "female"])
        (root / "ISIC_2019_Training_Input").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(i)).save(root / "ISIC_2019_Training_Input" / f"{name}.jpg")
    _write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image"] + ISIC_COLUMNS, truth)
    _write_csv(root / "ISIC_2019_Training_Metadata.csv", ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"], meta)
    return root


def test_isic_grouped_by_lesion_and_ungrouped(isic_dir: Path) -> None:
    ds = load_dataset(f"isic2019:{isic_dir}")
    assert ds.task == "multiclass" and ds.primary_metric == "balanced_accuracy"
    assert ds.class_names == ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC") and "UNK" not in ds.class_names
    assert sum(len(s) for s in ds.splits.values()) == 80 and len(ds.splits["test"]) >= 6
    assert any(i.endswith("_downsampled") for s in ds.splits.values() for i in s.ids)
    ids, _, groups = isic2019.read_labels(isic_dir)
    assert groups is not None
    group_of = dict(zip(ids, groups, strict=True))
    assert _groups_disjoint(ds, group_of.__getitem__)
    assert group_of["ISIC_0000003"] == "image:ISIC_0000003"  # no lesion_id: its own group
    flat = load_dataset(f"isic2019:{isic_dir}?grouping=none")
    assert flat.content_digest != ds.content_digest and flat.extra["grouping"] == "none"
    assert sorted(p.name for p in isic_dir.glob("*fmprobe_split*")) == [
        "ISIC_2019_Training_GroundTruth_lesion.fmprobe_split_seed0_80-10-10.csv",
        "ISIC_2019_Training_GroundTruth_none.fmprobe_split_seed0_80-10-10.csv",
    ]


def test_isic_nested_image_folder_and_no_metadata_when_ungrouped(isic_dir: Path) -> None:
    images = isic_dir / "ISIC_2019_Training_Input"
    nested = isic_dir / "tmp_nested"
    images.rename(nested)
    images.mkdir()
    nested.rename(images / "ISIC_2019_Training_Input")  # the zip unpacked into a folder of the same name
    (isic_dir / "ISIC_2019_Training_Metadata.csv").unlink()
    ds = load_dataset(f"isic2019:{isic_dir}?grouping=none")
    assert "ISIC_2019_Training_Input/ISIC_2019_Training_Input" in ds.splits["train"].source.describe(0)
    with pytest.raises(DatasetError, match=r"Metadata\.csv not found: grouping by lesion.*grouping=none"):
        load_dataset(f"isic2019:{isic_dir}")


def test_isic_named_errors(isic_dir: Path) -> None:
    gt = isic_dir / "ISIC_2019_Training_GroundTruth.csv"
    original = gt.read_text()
    (isic_dir / "ISIC_2019_Training_Input" / "ISIC_0000005.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) listed in ISIC_2019_Training_GroundTruth\.csv are missing.*ISIC_0000005\.jpg"):
        load_dataset(f"isic2019:{isic_dir}")
    unk = "ISIC_0000001,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0"
    gt.write_text(original.replace("ISIC_0000001,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0", unk))
    with pytest.raises(DatasetError, match=r"line 3 \(ISIC_0000001\): labelled UNK"):
        isic2019.read_labels(isic_dir)
    gt.write_text(original.replace("ISIC_0000001,1.0", "ISIC_0000001,0.5"))
    with pytest.raises(DatasetError, match=r"unknown label value\(s\) \[\('MEL', '0.5'\)\]"):
        isic2019.read_labels(isic_dir)
    gt.write_text(original.replace("image,MEL", "image,Melanoma"))
    with pytest.raises(DatasetError, match=r"missing column\(s\) 'MEL'"):
        isic2019.read_labels(isic_dir)
    gt.unlink()
    with pytest.raises(DatasetError, match=r"ISIC_2019_Training_GroundTruth\.csv not found: the ISIC 2019 training download"):
        load_dataset(f"isic2019:{isic_dir}")
    with pytest.raises(DatasetError, match=r"grouping='patient'; use lesion"):
        load_dataset(f"isic2019:{isic_dir}?grouping=patient")


def test_real_isic2019_labels_and_lesion_groups() -> None:
    root = shared_file("isic2019/ISIC_2019_Training_GroundTruth.csv").parent
    shared_file("isic2019/ISIC_2019_Training_Metadata.csv")
    ids, labels, groups = isic2019.read_labels(root)
    assert len(ids) == 25_331 and len(set(ids)) == 25_331
    assert np.bincount(labels, minlength=8).tolist() == [4522, 12875, 3323, 867, 2624, 239, 253, 628]  # no UNK
    assert sum(i.endswith("_downsampled") for i in ids) == 2074
    assert groups is not None
    counts = Counter(groups)
    assert sum(1 for g in counts if g.startswith("image:")) == 2084  # images without a lesion_id
    assert sum(1 for g in counts if g.startswith("lesion:")) == 11_847 and max(counts.values()) == 31
    assignment = grouped_stratified_split(labels, groups, isic2019.FRACTIONS, seed=0)
    where: dict[str, int] = {}
    assert all(where.setdefault(g, int(a)) == a for g, a in zip(groups, assignment, strict=True))
    assert np.allclose(np.bincount(assignment) / len(ids), [0.8, 0.1, 0.1], atol=0.01)


# ---------------------------------------------------------------- CheXpert -------------------------------------------

OBS = list(chexpert.OBSERVATIONS)
CHEX_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + OBS


def _chex_row(split: str, patient: int, view: str, values: dict[str, str]) -> list[str]:
    name = "view1_frontal.jpg" if view == "Frontal" else "view2_lateral.jpg"
    path = f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study1/{name}"
    return [path, "Female", "60", view, "AP" if view == "Frontal" else ""] + [values.get(o, "") for o in OBS]


@pytest.fixture
def chexpert_dir(tmp_path: Path) -> Path:
    root = tmp_path / "renamed-chexpert"  # Path values keep 'CheXpert-v1.0-small/': the first component is replaced
    train, valid = [], []
    for p in range(1, 25):
        values = {"No Finding": "1.0"} if p % 3 else {"Edema": "1.0", "Support Devices": "-1.0", "Fracture": "0.0"}
        if p == 2:
            values = {"Atelectasis": "-1.0", "Pneumonia": "-1.0", "No Finding": ""}
        train += [_chex_row("train", p, "Frontal", values), _chex_row("train", p, "Lateral", values)]
    for p in range(64541, 64544):
        valid.append(_chex_row("valid", p, "Frontal", {o: "0.0" for o in OBS} | {"Cardiomegaly": "1.0"}))
    valid.append(_chex_row("valid", 64541, "Lateral", {o: "0.0" for o in OBS}))
    for row in train + valid:
        write_png(root / row[0].split("/", 1)[1], np.full((8, 8), 100, dtype=np.uint8))
    _write_csv(root / "train.csv", CHEX_HEADER, train)
    _write_csv(root / "valid.csv", CHEX_HEADER, valid)
    return root


def test_chexpert_layout_split_and_policies(chexpert_dir: Path) -> None:
    ds = load_dataset(f"chexpert:{chexpert_dir}")
    assert ds.task == "multilabel" and ds.primary_metric == "roc_auc" and ds.class_names == tuple(OBS)
    assert ds.extra["competition_labels"] == ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
    assert len(ds.splits["test"]) == 4 and len(ds.splits["val"]) >= 2 and len(ds.splits["train"]) + len(ds.splits["val"]) == 48
    assert _groups_disjoint(ds, lambda i: i.split("/")[2])
    assert ds.splits["test"].source.load(0).mode == "RGB"
    assert (chexpert_dir / "train.fmprobe_split_seed0_90-10-0.csv").exists()

    def labels_of(spec: str) -> dict[str, np.ndarray]:
        d = load_dataset(spec)
        return {i: lab for s in d.splits.values() for i, lab in zip(s.ids, s.labels, strict=True)}

    key = "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg"
    atel, pneu, nofind = OBS.index("Atelectasis"), OBS.index("Pneumonia"), OBS.index("No Finding")
    zeros = labels_of(f"chexpert:{chexpert_dir}")[key]
    ones = labels_of(f"chexpert:{chexpert_dir}?uncertain=ones")[key]
    ignore_ds = load_dataset(f"chexpert:{chexpert_dir}?uncertain=ignore")
    ignore = {i: lab for s in ignore_ds.splits.values() for i, lab in zip(s.ids, s.labels, strict=True)}[key]
    assert (zeros[atel], ones[atel], ignore[atel]) == (0, 1, -1) and (ignore[pneu], ones[pneu]) == (-1, 1)
    assert zeros[nofind] == ones[nofind] == ignore[nofind] == 0  # blank = not mentioned = negative
    assert ignore_ds.extra["missing_label"] == -1 and "missing_label" not in ds.extra
    assert len({ds.content_digest, ignore_ds.content_digest}) == 2

    front = load_dataset(f"chexpert:{chexpert_dir}?frontal=1")
    assert all(i.endswith("_frontal.jpg") for s in front.splits.values() for i in s.ids)
    assert len(front.splits["test"]) == 3
    where = {i: n for n, s in ds.splits.items() for i in s.ids}
    assert all(where[i] == n for n, s in front.splits.items() for i in s.ids)  # one carve for every option


def test_chexpert_named_errors(chexpert_dir: Path) -> None:
    train = chexpert_dir / "train.csv"
    original = train.read_text()
    (chexpert_dir / "valid/patient64542/study1/view1_frontal.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 image\(s\) listed in valid\.csv are missing.*patient64542"):
        load_dataset(f"chexpert:{chexpert_dir}")
    train.write_text(original.replace(",1.0,", ",2.0,", 1))
    with pytest.raises(DatasetError, match=r"train\.csv, line 2: 'No Finding' has value '2.0'"):
        chexpert.read_labels(chexpert_dir)
    train.write_text(original.replace("patient00003", "p3"))
    with pytest.raises(DatasetError, match=r"line 6: Path .* has no patientNNNNN folder"):
        chexpert.read_labels(chexpert_dir)
    train.write_text(original)
    (chexpert_dir / "valid.csv").unlink()
    with pytest.raises(DatasetError, match=r"valid\.csv not found: a CheXpert download"):
        load_dataset(f"chexpert:{chexpert_dir}")
    with pytest.raises(DatasetError, match=r"uncertain='maybe'; use zeros"):
        load_dataset(f"chexpert:{chexpert_dir}?uncertain=maybe")


# ---------------------------------------------------------------- CBIS-DDSM ------------------------------------------

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
        _write_csv(root_csv / cbis_ddsm.CSV_FILES[(kind, split)], MASS_HEADER if kind == "mass" else CALC_HEADER, rows)
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
    assert (cbis_tcia / "cbis-ddsm_full.fmprobe_split_seed0_85-15-0.csv").exists()


@needs_pydicom
def test_cbis_named_errors(cbis_tcia: Path) -> None:
    import shutil

    csv_path = cbis_tcia / "mass_case_description_train_set.csv"
    original = csv_path.read_text()
    shutil.rmtree(cbis_tcia / "CBIS-DDSM" / "Mass-Training_P_00003_LEFT_CC_1")
    with pytest.raises(DatasetError, match=r"1 case folder\(s\).*missing, e\.g\. Mass-Training_P_00003_LEFT_CC_1 \(.*mass_case_description_train_set\.csv, line 4\)"):
        load_dataset(f"cbis-ddsm:{cbis_tcia}")
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
    _write_csv(root / "csv" / "dicom_info.csv",
               ["file_path", "image_path", "PatientID", "SeriesDescription", "SeriesInstanceUID", "Rows", "Columns"],
               info)  # fmt: skip
    return root


def test_cbis_jpeg_conversion_layout(cbis_jpeg: Path) -> None:
    ds = load_dataset(f"cbis-ddsm:{cbis_jpeg}")
    assert ds.extra["layout"] == "jpeg" and ds.image_conversion == "pil-rgb8"
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

"""CBIS-DDSM (Curated Breast Imaging Subset of DDSM, TCIA): ``cbis-ddsm:<dir>``, benign vs malignant.

Two published layouts are read, detected from the files present:

**TCIA DICOM download** (cancerimagingarchive.net, collection CBIS-DDSM: the ``.tcia`` manifest opened with the
NBIA Data Retriever, plus the four case-description CSVs from the same page)::

    <dir>/mass_case_description_train_set.csv   mass_case_description_test_set.csv
    <dir>/calc_case_description_train_set.csv   calc_case_description_test_set.csv
    <dir>/CBIS-DDSM/<case folder>/.../*.dcm      (or the case folders directly in <dir>)

A case folder is named like the first component of the CSV's DICOM paths: ``Mass-Training_P_00001_LEFT_CC`` (the
full mammogram) and ``Mass-Training_P_00001_LEFT_CC_1`` (abnormality 1: its cropped ROI and its ROI mask). The
folders below it differ between downloads (the CSV's UID folders and ``000000.dcm`` names in the "classic" layout;
``07-21-2016-DDSM-NA-96009/1.000000-cropped images-12345/1-1.dcm`` in the "descriptive" one), and the CSV's
UIDs and crop/mask file names often do not match the files. So fmprobe goes by the case folder only and takes
the ``.dcm`` inside it: for a full mammogram the only one; for a crop the one whose series folder or
``SeriesDescription`` says "cropped images", else (crop and mask in one series) the smaller image, since the ROI
mask is full-mammogram sized. A case folder that is missing, empty or ambiguous is an error naming it.
Each CSV's case folders must carry its own prefix (``Mass-Training_``, ``Mass-Test_``, ``Calc-Training_``,
``Calc-Test_``): swapped or renamed files are refused, naming the file and the name to put it back under. Errors
name the physical line a record starts on (each published record spans two lines: a quoted path ends in a newline).
DICOMs are windowed to 8 bits (``?window=dicom|minmax|percentile``, ``&percentiles=0.5,99.5``; see
``fmprobe.datasets.dicom``), recorded in ``Dataset.image_conversion``.

**JPEG conversion** (Kaggle "CBIS-DDSM: Breast Cancer Image Dataset", awsaf49/cbis-ddsm-breast-cancer-image-dataset)::

    <dir>/csv/dicom_info.csv                       file_path, image_path, ..., PatientID, ..., SeriesDescription, ...
    <dir>/csv/{mass,calc}_case_description_{train,test}_set.csv
    <dir>/jpeg/<SeriesInstanceUID>/1-NNN.jpg

``dicom_info.csv`` maps each JPEG (``image_path``, e.g. ``CBIS-DDSM/jpeg/<uid>/1-249.jpg``, read relative to
``<dir>/jpeg``) to its case folder (``PatientID``) and kind (``SeriesDescription``: full mammogram images /
cropped images / ROI mask images; some rows leave it blank, then the smaller of crop and mask by ``Rows`` x
``Columns`` is the crop).

Samples (``?image=``): ``crop`` (default): one per abnormality (CSV row), the cropped ROI, labelled by its
pathology: the benign/malignant label belongs to an abnormality. ``full``: one per full mammogram, malignant if
any abnormality in it is malignant. Pathology MALIGNANT -> 1 (``malignant``); BENIGN and BENIGN_WITHOUT_CALLBACK
-> 0 (``benign``). ``?abnormality=both`` (default), ``mass`` or ``calc`` selects the case type. Task binary,
primary metric ROC AUC.

Per-sample metadata (``Split.metadata``, stored in the feature file), lower-case as the CSVs spell it: ``density``
(``breast_density`` / ``breast density``: BI-RADS ``1`` to ``4``; two rows of the published calc test file say
``0``, kept as written), ``abnormality`` (``abnormality type``: ``mass`` / ``calcification``), ``view`` (``image
view``: ``cc`` / ``mlo``), ``side`` (``left or right breast``: ``left`` / ``right``), and ``group`` (the patient). With
``?image=full`` a mammogram's rows must agree on them. They are not in the cache key: editing them refreshes cached
feature files' metadata instead of re-extracting.

Split: the official train/test (the CSV's file); validation is carved from train (85/15), grouped by patient and
stratified, over mass and calc together (so a patient's split is the same in every variant; all four CSVs are
read, images are needed only for the selected type). Saved as ``cbis-ddsm_<image>.fmprobe_split_v2_seed0_85-15-0.csv``
in ``<dir>``. The official split itself is not patient-disjoint once mass and calc are combined: 31 patients have mass cases in
one set and calcification cases in the other (83 train and 60 test crops; 64 and 50 full mammograms; in 29
views the same mammogram appears, as two DICOM files, in train and in test). ``?overlap=keep`` (default, the
official split, as published results use it) keeps them; ``?overlap=drop`` leaves their train/val samples out so
no patient spans train and test. ``Dataset.extra["patients_in_train_and_test"]`` counts them.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from fmprobe.datasets.base import (
    FILE_IMAGE_CONVERSION,
    Dataset,
    FileSource,
    ImageSource,
    digest_parts,
    file_listing_digest,
    metadata_value,
    not_found,
)
from fmprobe.datasets.dicom import (
    DEFAULT_PERCENTILES,
    WINDOW_MODES,
    DicomSource,
    check_window,
    conversion_tag,
    parse_percentiles,
    read_header,
)
from fmprobe.datasets.manifest import read_csv_rows
from fmprobe.datasets.sources import SEED, DatasetSource, OptionSpec
from fmprobe.datasets.splits import assign_splits, group_conflict, load_or_create_split, split_file_for
from fmprobe.errors import DatasetError
from fmprobe.tasks import GROUP

CSV_FILES: dict[tuple[str, str], str] = {
    ("mass", "train"): "mass_case_description_train_set.csv",
    ("mass", "test"): "mass_case_description_test_set.csv",
    ("calc", "train"): "calc_case_description_train_set.csv",
    ("calc", "test"): "calc_case_description_test_set.csv",
}
# each file's role as its case folders spell it: Mass-Training_P_00001_LEFT_CC_1 belongs in the mass train CSV
CASE_PREFIX = {key: f"{key[0].capitalize()}-{'Training' if key[1] == 'train' else 'Test'}" for key in CSV_FILES}
ROLE_OF_PREFIX = {prefix: key for key, prefix in CASE_PREFIX.items()}
DICOM_INFO = "dicom_info.csv"
PATHOLOGY = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
CLASS_NAMES = ("benign", "malignant")
IMAGE_MODES = ("crop", "full")
ABNORMALITIES = ("both", "mass", "calc")
OVERLAP = ("keep", "drop")
CARVE = (0.85, 0.15, 0.0)
# CSV columns fmprobe needs, by normalised name (lower case, '_' as space: the mass CSVs say 'breast_density',
# the calc CSVs 'breast density'; normalising makes such spellings equal)
COLUMNS = {"patient": "patient id", "pathology": "pathology", "full": "image file path", "crop": "cropped image file path"}
# per-sample metadata keys (``Split.metadata``) and the normalised column each is read from
META_COLUMNS = {
    "density": "breast density", "abnormality": "abnormality type", "view": "image view", "side": "left or right breast",
}  # fmt: skip
LAYOUT = (
    "CBIS-DDSM comes as the TCIA download (the four {mass,calc}_case_description_{train,test}_set.csv files beside "
    "the CBIS-DDSM/ folder of DICOM case folders) or as the Kaggle JPEG conversion (csv/ with those four files and "
    "dicom_info.csv, beside jpeg/); give that folder after 'cbis-ddsm:'"
)
KINDS = {"crop": "cropped images", "mask": "ROI mask images", "full": "full mammogram images"}


def _kind(text: str | None) -> str | None:
    """'crop', 'mask' or 'full' from a SeriesDescription or a descriptive series-folder name."""
    t = (text or "").lower()
    return "crop" if "crop" in t else "mask" if "mask" in t else "full" if "full" in t else None


@dataclass(frozen=True)
class Sample:
    """One labelled image as the CSVs describe it (no file resolved yet)."""

    id: str  # its case folder: Mass-Training_P_00001_LEFT_CC_1 (crop) or Mass-Training_P_00001_LEFT_CC (full)
    official: str  # train | test
    patient: str  # P_00001
    label: int  # 1 malignant, 0 benign
    abnormality: str  # mass | calc
    where: str  # "<csv>, line N": the physical line its (first) record starts on
    metadata: dict[str, str] = field(default_factory=dict)  # META_COLUMNS' keys -> lower-case values


def csv_folder(root: Path) -> Path:
    """Where the case-description CSVs are: ``<dir>/csv`` (JPEG conversion) or ``<dir>`` (TCIA)."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; {LAYOUT}.")
    nested = root / "csv"
    return nested if (nested / CSV_FILES[("mass", "train")]).is_file() or (nested / DICOM_INFO).is_file() else root


def _case_folder(value: str, where: str, column: str) -> str:
    """First component of a published DICOM path (cells may end in a newline or spaces; read_csv_rows strips)."""
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if not parts or parts[0].split("_", 1)[0] not in ROLE_OF_PREFIX:
        raise DatasetError(
            f"{where}: {column!r} is {value!r}; expected a path starting with the case folder, whose name starts "
            f"with {', '.join(p + '_' for p in ROLE_OF_PREFIX)}, e.g. "
            "Mass-Training_P_00001_LEFT_CC_1/<uid>/<uid>/000000.dcm."
        )
    return parts[0]


def record_lines(path: Path) -> list[int]:
    """The physical line (1-based, as an editor numbers them) each non-blank record of a CSV starts on, header
    first. The published case descriptions end a quoted path cell with a newline, so one record spans two lines
    and the record count is not the line number a user looks for."""
    reader = csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline=""))
    starts: list[int] = []
    end = 0
    for cells in reader:
        if any(cell.strip() for cell in cells):  # the records read_csv_rows keeps
            starts.append(end + 1)
        end = reader.line_num
    return starts


def _check_role(path: Path, role: tuple[str, str], rows: list[tuple[Sample, str]]) -> None:
    """Refuse a case description whose case folders belong to another of the four files (swapped or renamed
    files would otherwise load: the test set would then hold Mass-Training_ cases)."""
    expected = CASE_PREFIX[role]
    found = [(s, folder, ROLE_OF_PREFIX[folder.split("_", 1)[0]]) for s, full in rows for folder in (s.id, full)]
    wrong = [(s, folder, other) for s, folder, other in found if other != role]
    if not wrong:
        return
    sample, folder, other = wrong[0]
    if len(wrong) == len(found):
        raise DatasetError(
            f"{path}: holds {CASE_PREFIX[other]}_ case folders (e.g. {folder}, {sample.where}), but this file's "
            f"name says {expected}_ cases. The files are swapped or renamed: put {path.name} back as "
            f"{CSV_FILES[other]}, the name TCIA gives the {other[0]} {other[1]} cases."
        )
    raise DatasetError(
        f"{sample.where}: case folder {folder} is a {CASE_PREFIX[other]}_ case, but {path.name} holds the "
        f"{expected}_ cases; its rows come from more than one case description. Re-download the four CSVs from "
        "the TCIA CBIS-DDSM page."
    )


def read_rows(root: Path) -> list[tuple[Sample, str]]:
    """Every CSV row as (crop sample, full-mammogram case folder), from all four CSVs; touches no image."""
    folder = csv_folder(root)
    out: list[tuple[Sample, str]] = []
    for (abnormality, official), name in CSV_FILES.items():
        path = folder / name
        if not path.is_file():
            raise not_found(path, LAYOUT)
        header, rows = read_csv_rows(path)
        by_norm = {h.lower().replace("_", " ").strip(): h for h in header}
        absent = [c for c in (*COLUMNS.values(), *META_COLUMNS.values()) if c not in by_norm]
        if absent:
            raise DatasetError(f"{path}: missing column(s) {absent}; found {header}. Is this a CBIS-DDSM case description?")
        col = {key: by_norm[norm] for key, norm in COLUMNS.items()}
        if not rows:
            raise DatasetError(f"{path}: no rows.")
        in_file: list[tuple[Sample, str]] = []
        for line, row in zip(record_lines(path)[1:], rows, strict=True):
            where = f"{path}, line {line}"
            pathology = row[col["pathology"]].upper()
            if pathology not in PATHOLOGY:
                raise DatasetError(
                    f"{where}: pathology {row[col['pathology']]!r} is not one of {', '.join(PATHOLOGY)} "
                    "(MALIGNANT is the positive class; both BENIGN kinds are benign)."
                )
            patient = row[col["patient"]]
            if not patient:
                raise DatasetError(f"{where}: empty patient_id.")
            crop = _case_folder(row[col["crop"]], where, col["crop"])
            full = _case_folder(row[col["full"]], where, col["full"])
            metadata = {key: metadata_value(row[by_norm[column]]) for key, column in META_COLUMNS.items()}
            in_file.append((Sample(crop, official, patient, PATHOLOGY[pathology], abnormality, where, metadata), full))
        _check_role(path, (abnormality, official), in_file)
        out += in_file
    return out


def read_labels(root: Path, image: str = "crop", abnormality: str = "both") -> list[Sample]:
    """The samples of one variant: ``crop`` one per abnormality, ``full`` one per full mammogram (malignant if any
    of its abnormalities is); ``abnormality`` mass, calc or both. Touches no image."""
    if image not in IMAGE_MODES:
        raise DatasetError(f"cbis-ddsm image={image!r}: use crop (default) or full.")
    if abnormality not in ABNORMALITIES:
        raise DatasetError(f"cbis-ddsm abnormality={abnormality!r}: use both (default), mass or calc.")
    rows = read_rows(root)
    if image == "crop":
        samples = [crop for crop, _ in rows]
    else:
        merged: dict[str, Sample] = {}
        for crop, full in rows:
            first = merged.get(full)
            if first is None:
                merged[full] = replace(crop, id=full)
            elif first.patient != crop.patient:
                raise DatasetError(
                    f"{crop.where}: mammogram {full} belongs to patient {crop.patient} here but to {first.patient} "
                    f"at {first.where}; the CSVs disagree."
                )
            elif first.metadata != crop.metadata:  # density, view, side and type describe the mammogram
                raise DatasetError(
                    f"{crop.where}: mammogram {full} has {crop.metadata} here but {first.metadata} at {first.where}; "
                    "the rows of one mammogram must agree on breast density, view, side and abnormality type."
                )
            elif crop.label > first.label:
                merged[full] = replace(first, label=crop.label)
        samples = list(merged.values())
    counts = Counter(s.id for s in samples)
    dupes = [s for s in samples if counts[s.id] > 1]
    if dupes:
        raise DatasetError(
            f"{dupes[0].where}: case folder {dupes[0].id} is listed more than once; each abnormality has its own "
            "case folder. Are two CSVs copies of each other?"
        )
    return [s for s in samples if abnormality in ("both", s.abnormality)]


@dataclass
class Candidate:
    path: Path
    kind: str | None  # crop | mask | full | None (not known yet)
    pixels: int | None = None


def choose_file(
    candidates: list[Candidate], want: str, folder: str, inspect: Callable[[Candidate], Candidate] | None = None
) -> Path:
    """Pick the crop (``want='crop'``) or full mammogram (``'full'``) among the images of one case folder.

    A lone file of unknown kind is taken as it is. Otherwise the kinds known from series-folder names or
    SeriesDescription decide; files of unknown kind are ``inspect``-ed (DICOM header) when nothing is labelled
    ``want``; a crop still undecided is the strictly smaller image among crop/mask candidates, because the ROI
    mask has the full mammogram's size.
    """
    if len(candidates) == 1 and candidates[0].kind in (want, None):
        return candidates[0].path
    pool = list(candidates)
    if inspect is not None and not any(c.kind == want for c in pool):
        pool = [inspect(c) if c.kind is None else c for c in pool]
    hits = [c for c in pool if c.kind == want]
    unknown = [c for c in pool if c.kind is None]
    if len(hits) == 1:
        return hits[0].path
    if not hits and len(unknown) == 1:
        return unknown[0].path
    rest = hits or unknown
    if want == "crop" and not hits:
        rest = [c for c in pool if c.kind in (None, "mask")]
        if len(rest) >= 2 and all(c.pixels for c in rest):
            by_size = sorted(rest, key=lambda c: c.pixels or 0)
            if (by_size[0].pixels or 0) < (by_size[1].pixels or 0):
                return by_size[0].path
        if len(rest) < 2:
            rest = []
    if not rest:
        kinds = sorted(KINDS.get(str(c.kind), "unknown") for c in pool)
        raise DatasetError(f"{folder}: no {KINDS[want]} among its {len(pool)} file(s) (found: {', '.join(kinds)}).")
    names = ", ".join(str(c.path) for c in rest[:4])
    raise DatasetError(
        f"{folder}: cannot tell which file is the {KINDS[want]} ({len(rest)} candidates: {names}). Remove the extra "
        "file(s) or re-download this case."
    )


def _resolve_tcia(root: Path, samples: list[Sample], want: str) -> list[Path]:
    base = root / "CBIS-DDSM" if (root / "CBIS-DDSM").is_dir() else root
    absent: list[Sample] = []
    paths: list[Path] = []

    def inspect(c: Candidate) -> Candidate:
        ds = read_header(c.path)
        rows, cols = ds.get("Rows"), ds.get("Columns")
        return Candidate(c.path, _kind(str(ds.get("SeriesDescription", ""))), int(rows * cols) if rows and cols else None)

    for s in samples:
        folder = base / s.id
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".dcm" and p.is_file()) if folder.is_dir() else []
        if not files:
            absent.append(s)
            paths.append(folder)
            continue
        per_dir = Counter(p.parent for p in files)
        # a descriptive series folder ('1.000000-cropped images-12345') names the kind when it holds one file
        candidates = [Candidate(p, _kind(p.parent.name) if per_dir[p.parent] == 1 else None) for p in files]
        paths.append(choose_file(candidates, want, str(folder), inspect))
    if absent:
        raise DatasetError(
            f"{base}: {len(absent)} case folder(s) with .dcm files are missing, e.g. "
            + "; ".join(f"{s.id} ({s.where})" for s in absent[:3])
            + ". Download them with the NBIA Data Retriever (the TCIA CBIS-DDSM manifest), or choose the case "
            "type you have with ?abnormality=mass or ?abnormality=calc."
        )
    return paths


def _resolve_jpeg(root: Path, samples: list[Sample], want: str) -> tuple[list[Path], Path]:
    info_path = root / "csv" / DICOM_INFO
    header, rows = read_csv_rows(info_path)
    absent_cols = [c for c in ("image_path", "PatientID", "SeriesDescription") if c not in header]
    if absent_cols:
        raise DatasetError(f"{info_path}: missing column(s) {absent_cols}; found {header[:8]}…")
    has_size = "Rows" in header and "Columns" in header
    by_case: dict[str, list[Candidate]] = defaultdict(list)
    for row in rows:
        parts = PurePosixPath(row["image_path"].replace("\\", "/")).parts
        rel = parts[parts.index("jpeg") + 1 :] if "jpeg" in parts else parts
        pixels = None
        if has_size:
            try:
                pixels = int(float(row["Rows"])) * int(float(row["Columns"]))
            except ValueError:
                pixels = None
        by_case[row["PatientID"]].append(Candidate(root.joinpath("jpeg", *rel), _kind(row["SeriesDescription"]), pixels))
    paths: list[Path] = []
    unlisted = [s for s in samples if s.id not in by_case]
    if unlisted:
        raise DatasetError(
            f"{info_path}: {len(unlisted)} case folder(s) of the case descriptions have no image, e.g. "
            + "; ".join(f"{s.id} ({s.where})" for s in unlisted[:3])
            + ". Is dicom_info.csv from the same download?"
        )
    for s in samples:
        paths.append(choose_file(by_case[s.id], want, f"{info_path} PatientID {s.id}"))
    gone = [p for p in paths if not p.is_file()]
    if gone:
        raise DatasetError(
            f"{root / 'jpeg'}: {len(gone)} image(s) named in {DICOM_INFO} are missing, e.g. "
            f"{', '.join(str(p) for p in gone[:3])}. Re-download or re-extract the JPEG conversion."
        )
    return paths, info_path


@dataclass(frozen=True)
class _Images:
    """Where the chosen samples' images are and how they are read, for one of the two layouts."""

    paths: list[Path]
    # files whose bytes enter the digest: dicom_info.csv (the JPEG conversion's file choices). Not the case
    # descriptions: their ids, labels and split enter it directly, their metadata columns must not (editing those
    # refreshes a cached feature file's metadata instead of re-extracting it)
    label_files: list[Path]
    make_source: Callable[[tuple[Path, ...]], ImageSource]
    layout: str  # jpeg | tcia-dicom
    conversion: str  # how pixels became 8-bit RGB (a cache-key component): the DICOM windowing tag, or PIL's


def _window(root: Path, jpeg: bool, window: str | None, percentiles: tuple[float, float] | None) -> tuple[str, tuple[float, float]]:
    """The DICOM windowing options, checked against the layout (the JPEG conversion is already 8-bit)."""
    if jpeg and (window is not None or percentiles is not None):
        raise DatasetError(
            f"{root}: window/percentiles apply to the TCIA DICOM download; this is the JPEG conversion "
            "(csv/dicom_info.csv), already 8-bit. Drop those options."
        )
    window = window or "dicom"
    percentiles = percentiles or DEFAULT_PERCENTILES
    if window != "percentile" and percentiles != DEFAULT_PERCENTILES:
        raise DatasetError(f"cbis-ddsm percentiles= needs window=percentile (got window={window}).")
    check_window(window, percentiles)
    return window, percentiles


def _carve(root: Path, every: list[Sample], image: str, seed: int) -> tuple[Path, dict[str, int]]:
    """Each sample's split (0 train, 1 val, 2 test): validation is carved from the official train set of every
    sample of this image mode, mass and calc together, so a patient's split is the same in every variant."""
    train_all = [s for s in every if s.official == "train"]
    split_file = split_file_for(root / f"cbis-ddsm_{image}.csv", seed, CARVE)
    carve = load_or_create_split(
        split_file, [s.id for s in train_all], np.asarray([s.label for s in train_all]), [s.patient for s in train_all],
        CARVE, seed,
    )
    assigned = {s.id: int(a) for s, a in zip(train_all, carve, strict=True)} | {
        s.id: 2 for s in every if s.official == "test"
    }
    return split_file, assigned


def _check_carve(split_file: Path, samples: list[Sample], assigned: dict[str, int]) -> None:
    """A patient in both train and val means the saved carve is not the grouped one fmprobe draws."""
    carved = [s for s in samples if assigned[s.id] < 2]
    conflict = group_conflict([s.patient for s in carved], [assigned[s.id] for s in carved])
    if conflict:
        at, first, second = conflict
        raise DatasetError(
            f"{split_file}: patient {carved[at].patient} is in both {first} and {second}; delete the "
            "file to carve validation again (grouped by patient)."
        )


def _images(
    root: Path, samples: list[Sample], image: str, jpeg: bool, window: str, percentiles: tuple[float, float]
) -> _Images:
    want = "crop" if image == "crop" else "full"
    if jpeg:
        paths, info_path = _resolve_jpeg(root, samples, want)
        return _Images(paths, [info_path], FileSource, "jpeg", FILE_IMAGE_CONVERSION)
    paths = _resolve_tcia(root, samples, want)
    make = partial(DicomSource, window=window, percentiles=percentiles)
    return _Images(paths, [], make, "tcia-dicom", conversion_tag(window, percentiles))


def load_cbis_ddsm(
    root: Path,
    spec: str,
    image: str = "crop",
    abnormality: str = "both",
    overlap: str = "keep",
    window: str | None = None,
    percentiles: tuple[float, float] | None = None,
    seed: int = 0,
) -> Dataset:
    if overlap not in OVERLAP:
        raise DatasetError(f"cbis-ddsm overlap={overlap!r}: use keep (the official split) or drop.")
    every = read_labels(root, image, "both")
    jpeg = (root / "csv" / DICOM_INFO).is_file()
    window, percentiles = _window(root, jpeg, window, percentiles)
    split_file, assigned = _carve(root, every, image, seed)
    samples = [s for s in every if abnormality in ("both", s.abnormality)]
    test_patients = {s.patient for s in samples if s.official == "test"}
    shared = sorted({s.patient for s in samples if s.official == "train"} & test_patients)
    if overlap == "drop":
        samples = [s for s in samples if s.official == "test" or s.patient not in test_patients]
    _check_carve(split_file, samples, assigned)

    found = _images(root, samples, image, jpeg, window, percentiles)
    ids = [s.id for s in samples]
    labels = np.asarray([s.label for s in samples], dtype=np.int64)
    assignment = np.asarray([assigned[s.id] for s in samples], dtype=np.int8)
    splits = assign_splits(
        ids, labels, found.paths, assignment,
        lambda name: f"{root}: the {name} split of cbis-ddsm ({image}, {abnormality}) is empty.", found.make_source,
        metadata={GROUP: [s.patient for s in samples], **{key: [s.metadata[key] for s in samples] for key in META_COLUMNS}},
    )  # fmt: skip
    digest = digest_parts(
        "cbis-ddsm", image, abnormality, overlap, "jpeg" if found.layout == "jpeg" else found.conversion,
        [hashlib.sha256(p.read_bytes()).hexdigest() for p in found.label_files], file_listing_digest(found.paths, root),
        ids, labels.tolist(), assignment.tolist(),
    )
    return Dataset(
        name="cbis-ddsm",
        spec=spec,
        task="binary",
        class_names=CLASS_NAMES,
        splits=splits,
        content_digest=digest,
        primary_metric="roc_auc",
        description=(
            f"CBIS-DDSM ({found.layout}) in {root}: {'ROI crops' if image == 'crop' else 'full mammograms'}, "
            f"{abnormality}; official train/test, validation carved by patient (seed {seed}, {split_file.name}); "
            f"{len(shared)} patient(s) in both train and test ({'dropped from train' if overlap == 'drop' else 'kept'})"
        ),
        image_conversion=found.conversion,
        extra={"layout": found.layout, "image": image, "abnormality": abnormality, "overlap": overlap,
               "patients_in_train_and_test": len(shared)},  # fmt: skip
    )


SOURCE = DatasetSource(
    name="cbis-ddsm",
    loader=load_cbis_ddsm,
    takes_path=True,
    example="cbis-ddsm:data/cbis-ddsm?image=crop",
    description="CBIS-DDSM mammography (TCIA DICOM or the Kaggle JPEG conversion): benign vs malignant",
    options=(
        OptionSpec("image", "crop", "crop: one ROI crop per abnormality; full: one per full mammogram", choices=IMAGE_MODES),
        OptionSpec("abnormality", "both", "the case type: mass, calc(ification) or both", choices=ABNORMALITIES),
        OptionSpec("overlap", "keep", "keep the official split, or drop train samples of patients also in test", choices=OVERLAP),
        OptionSpec("window", None, "DICOM windowing to 8 bits (TCIA layout only; default dicom)", choices=WINDOW_MODES),
        OptionSpec(
            "percentiles", None, "low,high for window=percentile (default 0.5,99.5)", parse_percentiles, form="LOW,HIGH"
        ),
        SEED,
    ),
)

"""CheXpert v1.0 (Stanford ML Group / AIMI), full or downsampled ("small"): ``chexpert:<dir>``.

Download CheXpert-v1.0 or CheXpert-v1.0-small (stanfordmlgroup.github.io/competitions/chexpert, or the Stanford
AIMI shared-datasets page) and unzip it; ``<dir>`` is the unpacked folder::

    <dir>/train.csv    Path, Sex, Age, Frontal/Lateral, AP/PA, then the 14 observations below
    <dir>/valid.csv    same columns; 234 radiologist-labelled studies' images (200 patients)
    <dir>/train/patientNNNNN/studyN/viewN_frontal.jpg   (and ..._lateral.jpg)
    <dir>/valid/patientNNNNN/studyN/viewN_frontal.jpg

``Path`` values start with the archive's folder name (``CheXpert-v1.0-small/train/patient00001/...``); that first
component is replaced by ``<dir>``, so a renamed folder still works. The second must be the CSV's own name (``train/`` in
``train.csv``, ``valid/`` in ``valid.csv``): swapped or renamed CSVs are refused, naming the file to put back.

Labels: the 14 observations (``No Finding`` ... ``Support Devices``) as a multilabel task, primary metric the
mean per-label ROC AUC. Values: ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, blank = not mentioned
(read as negative in every policy, as in the CheXpert paper). Uncertain labels follow ``?uncertain=``:

- ``zeros`` (default, "U-Zeros", the study's choice): uncertain -> 0;
- ``ones`` ("U-Ones"): uncertain -> 1;
- ``ignore`` ("U-Ignore"): uncertain -> **-1 in the label array, meaning "missing"**. Metrics and probes must
  leave those entries out (per label); ``Dataset.extra["missing_label"]`` is then -1.

``?frontal=1`` keeps frontal views only (``Frontal/Lateral`` == Frontal). The five competition labels
(Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion) are listed in
``Dataset.extra["competition_labels"]`` and, as the named label set ``competition``, in
``Dataset.evaluation["label_sets"]``: probing then records their mean AUC (``roc_auc[competition]``), as the CheXpert
paper reports, next to the mean over all evaluable labels and one AUC per label.

``?aggregate=study`` scores the test set per study, CheXpert's own evaluation: each study's score per label is the
max over its views, its label the views' common label (probing refuses a study whose views disagree). The study is
the ``patientNNNNN/studyN`` part of the Path, in ``Split.metadata[STUDY]``; ``Dataset.evaluation["aggregate"]`` is
``"study"``. The default ``image`` scores every image.

Per-sample metadata (``Split.metadata``, stored in the feature file), lower-case, "" where not recorded: ``sex``
(``male`` / ``female``; the CSV's ``Unknown`` is ""), ``age`` (years as text, e.g. ``68``), ``view`` (``frontal`` /
``lateral``, from ``Frontal/Lateral``) and ``projection`` (``ap``, ``pa``, ``ll``, ``rl``, ...; "" on most lateral views,
from ``AP/PA``); a key whose column a CSV lacks is left out. The cache key sees the CSVs' Paths and labels, not
these columns: editing them refreshes cached feature files' metadata instead of re-extracting.

Split: the official ``valid.csv`` is the test set; validation is carved from ``train.csv`` (90/10), grouped by
patient (``patientNNNNN`` from the path) and stratified on the competition labels. The carve covers every
train row whatever the options, so all policies and the frontal-only view share one split file
(``train.fmprobe_split_v2_seed0_90-10-0.csv`` beside the CSVs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmprobe.datasets.base import (
    Dataset,
    FileSource,
    Split,
    digest_parts,
    duplicated,
    file_listing_digest,
    labels_digest,
    metadata_value,
)
from fmprobe.datasets.manifest import read_layout_csv
from fmprobe.datasets.sources import SEED, DatasetSource, OptionSpec
from fmprobe.datasets.splits import assign_splits, group_conflict, load_or_create_split, split_file_for
from fmprobe.errors import DatasetError
from fmprobe.tasks import GROUP, MISSING, STUDY, TEST, TRAIN, VAL

OBSERVATIONS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)  # fmt: skip
COMPETITION_LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
POLICIES = ("zeros", "ones", "ignore")
CARVE = (0.9, 0.1, 0.0)
VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": 0}
PATIENT = re.compile(r"(?:^|/)(patient\d+)(?:/|$)")
STUDY_OF = re.compile(r"(?:^|/)(patient\d+/study\d+)(?:/|$)")
AGGREGATES = ("image", "study")
# per-sample metadata keys (``Split.metadata``) and the CSV column each is read from (optional columns)
META_COLUMNS = {"sex": "Sex", "age": "Age", "view": "Frontal/Lateral", "projection": "AP/PA"}
LAYOUT = (
    "a CheXpert download (CheXpert-v1.0 or CheXpert-v1.0-small) has train.csv, valid.csv, train/ and valid/; "
    "give the unzipped folder after 'chexpert:'"
)


def relative_image_path(csv_path: str) -> str:
    """``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`` -> ``train/patient00001/...``."""
    parts = csv_path.replace("\\", "/").split("/")
    if parts and parts[0] not in ("train", "valid", "test"):
        parts = parts[1:]
    return "/".join(parts)


@dataclass(frozen=True)
class Table:
    """One CheXpert CSV as read: raw labels keep -1 (uncertain); blanks are already 0."""

    ids: list[str]  # the Path column, unique
    raw: np.ndarray  # [N, 14] in {1, 0, -1}
    patients: list[str]
    rel: list[str]  # image path relative to the dataset folder, '/'-separated
    frontal: np.ndarray  # [N] bool
    metadata: dict[str, list[str]]  # sex, age, view, projection (where the CSV has the column), lower-case

    def labels(self, uncertain: str) -> np.ndarray:
        """The [N, 14] labels under an uncertainty policy (ignore: -1 = missing)."""
        return np.where(self.raw < 0, {"zeros": 0, "ones": 1, "ignore": MISSING}[uncertain], self.raw)

    def take(self, frontal_only: bool) -> tuple[Table, np.ndarray]:
        """The rows kept by the view option, and their indices."""
        index = np.flatnonzero(self.frontal) if frontal_only else np.arange(len(self.ids))
        pick = [int(i) for i in index]
        table = Table(
            [self.ids[i] for i in pick], self.raw[index], [self.patients[i] for i in pick], [self.rel[i] for i in pick],
            self.frontal[index], {key: [values[i] for i in pick] for key, values in self.metadata.items()},
        )
        return table, index

    def digest(self) -> str:
        """What of the CSV the features depend on (Paths and labels), not its metadata columns."""
        return digest_parts(self.ids, labels_digest(self.raw))

    def strata(self) -> np.ndarray:
        """Policy-independent stratification labels: the competition labels under U-Zeros."""
        return np.where(self.raw < 0, 0, self.raw)[:, [OBSERVATIONS.index(c) for c in COMPETITION_LABELS]]


def _check_folder(csv_path: Path, ids: list[str], rel: list[str]) -> None:
    """Each CheXpert CSV lists the images of the folder of its own name (``train.csv`` -> ``train/``); refuse one
    whose Paths say otherwise, so a swapped train.csv and valid.csv cannot load as each other."""
    folder = csv_path.stem
    under = [r.split("/", 1)[0] for r in rel]
    wrong = [i for i, f in enumerate(under) if f != folder]
    if not wrong:
        return
    first, other = wrong[0], under[wrong[0]]
    if len(wrong) == len(rel) and other in ("train", "valid", "test"):
        raise DatasetError(
            f"{csv_path}: every Path is under {other}/ (e.g. line {first + 2}: {ids[first]!r}), but {csv_path.name} "
            f"lists the {folder}/ images. The files are swapped or renamed: put {csv_path.name} back as {other}.csv."
        )
    raise DatasetError(
        f"{csv_path}, line {first + 2}: Path {ids[first]!r} is not under {folder}/, but {csv_path.name} lists the "
        f"{folder}/ images (CheXpert-v1.0-small/{folder}/patient00001/...). Restore {csv_path.name} from the archive."
    )


def path_units(csv_path: Path, ids: list[str], pattern: re.Pattern[str], missing: str) -> list[str]:
    """The part of every Path that ``pattern`` picks (the patient; the ``patientNNNNN/studyN`` study), or a named
    error on the first line without it."""
    out = []
    for line, path in enumerate(ids, start=2):
        match = pattern.search(path.replace("\\", "/"))
        if match is None:
            raise DatasetError(
                f"{csv_path}, line {line}: Path {path!r} has {missing}; CheXpert paths look like "
                "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg."
            )
        out.append(match.group(1))
    return out


def read_table(csv_path: Path) -> Table:
    """Read and check one CheXpert CSV (columns, label values, patient ids, views, the folder its Paths name);
    touches no image."""
    header, rows = read_layout_csv(csv_path, ("Path", "Frontal/Lateral") + OBSERVATIONS, LAYOUT, f"{LAYOUT}.")
    ids = [row["Path"] for row in rows]
    patients = path_units(csv_path, ids, PATIENT, "no patientNNNNN folder")
    views = [row["Frontal/Lateral"] for row in rows]
    for line, view in enumerate(views, start=2):
        if view not in ("Frontal", "Lateral"):
            raise DatasetError(f"{csv_path}, line {line}: Frontal/Lateral is {view!r}; expected Frontal or Lateral.")
    raw = np.zeros((len(rows), len(OBSERVATIONS)), dtype=np.int64)
    for c, column in enumerate(OBSERVATIONS):
        cells = [row[column] for row in rows]
        unknown = set(cells) - set(VALUES)
        if unknown:
            line = next(r for r, v in enumerate(cells, start=2) if v in unknown)
            raise DatasetError(
                f"{csv_path}, line {line}: {column!r} has value {cells[line - 2]!r}; CheXpert labels are 1.0 "
                "(positive), 0.0 (negative), -1.0 (uncertain) or blank (not mentioned)."
            )
        raw[:, c] = [VALUES[v] for v in cells]
    frontal = np.asarray([v == "Frontal" for v in views], dtype=bool)
    rel = [relative_image_path(path) for path in ids]
    _check_folder(csv_path, ids, rel)
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{csv_path}: duplicate Path(s) {duplicated(ids)}; each image may be listed once.")
    metadata = {key: [metadata_value(row[c]) for row in rows] for key, c in META_COLUMNS.items() if c in header}
    return Table(ids, raw, patients, rel, frontal, metadata)


def read_labels(
    root: Path, uncertain: str = "zeros", frontal: bool = False
) -> dict[str, tuple[list[str], np.ndarray, list[str]]]:
    """``{"train": (ids, labels, patients), "test": (...)}`` from train.csv and valid.csv; touches no image."""
    if uncertain not in POLICIES:
        raise DatasetError(f"chexpert uncertain={uncertain!r}: use zeros (U-Zeros, default), ones or ignore.")
    out = {}
    for split, name in (("train", "train.csv"), ("test", "valid.csv")):
        table, _ = read_table(root / name).take(frontal)
        out[split] = (table.ids, table.labels(uncertain), table.patients)
    return out


def _check_images(root: Path, rel: list[str], csv_name: str) -> list[Path]:
    paths = [root / p for p in rel]
    absent = [p for p in paths if not os.path.isfile(p)]
    if absent:
        raise DatasetError(
            f"{root}: {len(absent)} image(s) listed in {csv_name} are missing, e.g. "
            f"{', '.join(str(p) for p in absent[:3])}. {LAYOUT}; re-extract the archive."
        )
    return paths


def _check_patients(root: Path, split_file: Path, train: Table, carve: np.ndarray, test: Table) -> None:
    """Refuse a patient in two of train, val (the carve) and test (valid.csv): it leaks information."""
    order = [np.flatnonzero(carve == 0), np.flatnonzero(carve == 1)]
    patients = [train.patients[i] for members in order for i in members] + test.patients
    assignment = [0] * len(order[0]) + [1] * len(order[1]) + [2] * len(test.patients)
    conflict = group_conflict(patients, assignment)
    if conflict:
        at, first, second = conflict
        raise DatasetError(
            f"{root}: patient {patients[at]} is in both {first} and {second}; one patient in two "
            f"splits leaks information. Check valid.csv, or delete {split_file.name} to re-carve validation."
        )


def load_chexpert(
    root: Path, spec: str, uncertain: str = "zeros", frontal: bool = False, seed: int = 0, aggregate: str = "image"
) -> Dataset:
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; {LAYOUT}.")
    if uncertain not in POLICIES:
        raise DatasetError(f"chexpert uncertain={uncertain!r}: use zeros (U-Zeros, default), ones or ignore.")
    if aggregate not in AGGREGATES:
        raise DatasetError(f"chexpert aggregate={aggregate!r}: use image (default, per image) or study (max over views).")
    every, listed = read_table(root / "train.csv"), read_table(root / "valid.csv")
    # validation is carved over all train rows (independent of the options), then the options select rows
    split_file = split_file_for(root / "train.csv", seed, CARVE)
    carve = load_or_create_split(split_file, every.ids, every.strata(), every.patients, CARVE, seed)
    train, kept = every.take(frontal)
    carve = carve[kept]
    test, test_kept = listed.take(frontal)
    t_paths = _check_images(root, train.rel, "train.csv")
    s_paths = _check_images(root, test.rel, "valid.csv")
    _check_patients(root, split_file, train, carve, test)
    splits = assign_splits(
        train.ids, train.labels(uncertain), t_paths, carve,
        lambda name: f"{split_file}: the {name} split is empty; delete the file to carve validation again.",
        names=(TRAIN, VAL), metadata={GROUP: train.patients, **train.metadata},
    )  # fmt: skip
    test_meta = {GROUP: tuple(test.patients), **{key: tuple(values) for key, values in test.metadata.items()}}
    if aggregate == "study":
        studies = path_units(root / "valid.csv", listed.ids, STUDY_OF, "no patientNNNNN/studyN folders (?aggregate=study)")
        test_meta[STUDY] = tuple(studies[i] for i in test_kept)
    splits[TEST] = Split(TEST, tuple(test.ids), test.labels(uncertain), FileSource(tuple(s_paths)), test_meta)
    digest = digest_parts(
        "chexpert", uncertain, frontal,
        [every.digest(), listed.digest()],  # not the CSVs' bytes: sex, age, view and projection are not in the key
        file_listing_digest(t_paths + s_paths, root), carve.tolist(),
        *([aggregate] if aggregate != "image" else []),  # per-image feature files keep their cache keys
    )
    evaluation: dict[str, object] = {"label_sets": {"competition": list(COMPETITION_LABELS)}}
    if aggregate == "study":
        evaluation["aggregate"] = "study"
    extra: dict[str, object] = {"competition_labels": COMPETITION_LABELS, "uncertain": uncertain, "frontal": frontal}
    if uncertain == "ignore":
        extra["missing_label"] = MISSING
    return Dataset(
        name="chexpert",
        spec=spec,
        task="multilabel",
        class_names=OBSERVATIONS,
        splits=splits,
        content_digest=digest,
        primary_metric="roc_auc",
        description=(
            f"CheXpert in {root}: U-{uncertain.capitalize()}, {'frontal views' if frontal else 'all views'}; "
            f"test = valid.csv{' scored per study (max over views)' if aggregate == 'study' else ''}, "
            f"validation carved from train.csv by patient (seed {seed}, {split_file.name})"
        ),
        extra=extra,
        evaluation=evaluation,
    )


SOURCE = DatasetSource(
    name="chexpert",
    loader=load_chexpert,
    takes_path=True,
    example="chexpert:data/CheXpert-v1.0-small?uncertain=zeros",
    description="CheXpert v1.0 (full or small): chest X-rays, 14 observations (multilabel); test = valid.csv",
    options=(
        OptionSpec(
            "uncertain", "zeros", "how uncertain (-1) labels are read: U-Zeros, U-Ones, or U-Ignore (-1 = missing)",
            choices=POLICIES,
            hint="use zeros (U-Zeros, the study's), ones (U-Ones) or ignore (uncertain entries stored as -1 = missing)",
        ),
        OptionSpec("frontal", False, "frontal views only", bool),
        SEED,
        OptionSpec(
            "aggregate", "image", "score the test set per image, or per study (max over its views, as CheXpert does)",
            choices=AGGREGATES, hint="use image (default) or study (each study scored once: max over its views)",
        ),
    ),
)

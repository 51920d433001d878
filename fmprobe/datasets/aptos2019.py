"""APTOS 2019 Blindness Detection (Kaggle): ``aptos2019:<dir>``.

Download: the Kaggle competition "APTOS 2019 Blindness Detection" (``kaggle competitions download -c
aptos2019-blindness-detection``) and unzip it into ``<dir>``. fmprobe reads::

    <dir>/train.csv                 columns id_code, diagnosis (0 No DR, 1 Mild, 2 Moderate, 3 Severe, 4 Proliferative DR)
    <dir>/train_images/<id_code>.png  3,662 colour fundus photographs

``test.csv``, ``test_images/`` and ``sample_submission.csv`` may be present and are ignored: their labels were
never published, so, as in the study, only ``train.csv`` is used. It is split 70/15/15, stratified by grade and
seeded (``?seed=N``, default 0); the split is saved beside the data (``train.fmprobe_split_v2_seed0_70-15-15.csv``)
so every run sees the same one. APTOS has no patient ids, so the split cannot be grouped by patient. A ``train.csv``
with a single grade is refused (Kaggle's ``sample_submission.csv``, every diagnosis 0, is the usual stand-in).

Task: 5-grade ordinal; primary metric quadratic weighted kappa (the competition's metric).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from fmprobe.datasets.base import Dataset, digest_parts, duplicated, file_listing_digest, not_found
from fmprobe.datasets.manifest import read_layout_csv
from fmprobe.datasets.sources import SEED, DatasetSource
from fmprobe.datasets.splits import assign_splits, empty_split, load_or_create_split, split_file_for
from fmprobe.errors import DatasetError

CLASS_NAMES = ("No DR", "Mild", "Moderate", "Severe", "Proliferative DR")
FRACTIONS = (0.7, 0.15, 0.15)
LAYOUT = (
    "the Kaggle APTOS 2019 download (aptos2019-blindness-detection) has train.csv (id_code, diagnosis) and "
    "train_images/<id_code>.png; unzip it into the folder given after 'aptos2019:'"
)


def read_labels(root: Path) -> tuple[list[str], np.ndarray]:
    """``train.csv`` as (id_codes, grades 0-4), checked; touches no image."""
    csv_path = root / "train.csv"
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; {LAYOUT}.")
    header, rows = read_layout_csv(csv_path, ("id_code", "diagnosis"), LAYOUT, f"{LAYOUT}.")
    ids, labels = [], []
    grades = {str(g): g for g in range(5)} | {f"{g}.0": g for g in range(5)}
    for line, row in enumerate(rows, start=2):
        value = row["diagnosis"]
        if value not in grades:
            raise DatasetError(
                f"{csv_path}, line {line}: diagnosis {value!r} for {row['id_code']!r} is not a grade; APTOS grades are "
                "0 (No DR), 1 (Mild), 2 (Moderate), 3 (Severe), 4 (Proliferative DR)."
            )
        if not row["id_code"]:
            raise DatasetError(f"{csv_path}, line {line}: empty id_code.")
        ids.append(row["id_code"])
        labels.append(grades[value])
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{csv_path}: duplicate id_code(s) {duplicated(ids)}; each image may be listed once.")
    _check_grades(csv_path, header, labels)
    return ids, np.asarray(labels, dtype=np.int64)


def _check_grades(csv_path: Path, header: list[str], labels: list[int]) -> None:
    """A training file with one grade cannot train or test a grader; Kaggle's sample_submission.csv (the same two
    columns, every diagnosis 0) is the file most often found in its place."""
    grades = sorted(set(labels))
    if len(grades) > 1:
        return
    grade = grades[0]
    submission = header == ["id_code", "diagnosis"] and grade == 0
    looks = (
        "It looks like Kaggle's sample_submission.csv (columns id_code, diagnosis, every diagnosis 0): "
        if submission
        else ""
    )
    raise DatasetError(
        f"{csv_path}: all {len(labels)} rows have diagnosis {grade} ({CLASS_NAMES[grade]}); a training file needs "
        f"more than one grade. {looks}Put the competition's train.csv (3,662 graded images) back as train.csv."
    )


def image_paths(root: Path, ids: list[str]) -> list[Path]:
    """``train_images/<id_code>.png`` for each id, checked with one directory listing."""
    folder = root / "train_images"
    if not folder.is_dir():
        raise not_found(folder, LAYOUT)
    present = set(os.listdir(folder))
    names = [f"{i}.png" for i in ids]
    absent = [n for n in names if n not in present]
    if absent:
        raise DatasetError(
            f"{folder}: {len(absent)} image(s) listed in train.csv are missing, e.g. {', '.join(absent[:3])}. "
            "Re-download or re-extract train_images.zip from the Kaggle competition."
        )
    return [folder / n for n in names]


def load_aptos2019(root: Path, spec: str, seed: int = 0) -> Dataset:
    ids, labels = read_labels(root)
    paths = image_paths(root, ids)
    csv_path = root / "train.csv"
    split_file = split_file_for(csv_path, seed, FRACTIONS)
    assignment = load_or_create_split(split_file, ids, labels, None, FRACTIONS, seed)
    splits = assign_splits(ids, labels, paths, assignment, lambda name: empty_split(split_file, name))
    digest = digest_parts(
        "aptos2019", hashlib.sha256(csv_path.read_bytes()).hexdigest(), file_listing_digest(paths, root),
        assignment.tolist(),
    )
    return Dataset(
        name="aptos2019",
        spec=spec,
        task="ordinal",
        class_names=CLASS_NAMES,
        splits=splits,
        content_digest=digest,
        primary_metric="quadratic_kappa",
        description=f"APTOS 2019 train.csv in {root}, split 70/15/15 stratified (seed {seed}, {split_file.name})",
    )


SOURCE = DatasetSource(
    name="aptos2019",
    loader=load_aptos2019,
    takes_path=True,
    example="aptos2019:data/aptos2019",
    description="APTOS 2019 Blindness Detection (Kaggle): 3,662 fundus photos, 5-grade ordinal DR, split 70/15/15",
    options=(SEED,),
)

"""ISIC 2019 Challenge, task 1 training data: ``isic2019:<dir>``.

Download from the ISIC 2019 challenge page (challenge.isic-archive.com/data, "Training Data"): the image zip and
both CSVs, into ``<dir>``. fmprobe reads::

    <dir>/ISIC_2019_Training_GroundTruth.csv   image, MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK (one-hot, 0.0/1.0)
    <dir>/ISIC_2019_Training_Metadata.csv      image, age_approx, anatom_site_general, lesion_id, sex
    <dir>/ISIC_2019_Training_Input/<image>.jpg 25,331 dermoscopic images (the zip may also unpack to
                                               ISIC_2019_Training_Input/ISIC_2019_Training_Input/; both work)

Image names are taken from the ``image`` column as they are: 2,074 of them end in ``_downsampled`` (the files
are named that way too).

Task: 8-class (MEL, NV, BCC, AK, BKL, DF, VASC, SCC). ``UNK`` ("none of the others") exists only for the
challenge's test set and has no training image, so it is not a class; a row labelled UNK is refused.
Primary metric: balanced accuracy (the challenge's metric).

Split: 80/10/10, stratified by class, seeded (``?seed=N``). Default ``?grouping=lesion``: images of one lesion
(``lesion_id`` in the metadata; 11,847 lesions, up to 31 images each) stay in one split, because near-duplicate
views of a lesion in train and test inflate every number; the 2,084 images without a lesion_id are each their
own group. ``?grouping=none`` gives the study's ungrouped, image-level split and does not need the metadata file.
Each grouping has its own saved split file beside the data
(``ISIC_2019_Training_GroundTruth_lesion.fmprobe_split_v2_seed0_80-10-10.csv`` / ``..._none...``).

Per-sample metadata (``Split.metadata``, stored in the feature file; values lower-case, "" = not recorded), read
from the metadata file whenever it is present (with ``?grouping=none`` too):

- ``age``: ``age_approx`` as text, in steps of 5 (``"0"`` ... ``"85"``; the CSV's ``55.0`` is stored as ``55``);
- ``sex``: ``male`` / ``female``;
- ``site``: ``anatom_site_general`` as written (``anterior torso``, ``head/neck``, ``palms/soles``, ...);
- ``archive``: the source collection, from the ``lesion_id`` prefix: ``bcn20000`` (``BCN_``, 12,413 images),
  ``ham10000`` (``HAM_``, 10,015) and ``msk`` (``MSK4_``, 819). The 2,084 images without a lesion_id (ids
  ISIC_0000000 to ISIC_0016072, the older ISIC Archive uploads) get ``""``: the challenge credits every image that
  is not BCN or HAM to its "MSK Dataset", but the files do not name their source, and neither the id range (MSK4
  lies inside it) nor the ``_downsampled`` suffix (816 MSK4 images, 1,258 without a lesion id, no BCN or HAM) does.
- ``group``: the lesion, with ``?grouping=lesion`` only.

The cache key sees the ground truth, the lesion groups and the split, never age, sex or site: a corrected metadata
file refreshes the metadata of cached feature files instead of re-extracting them.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from fmprobe.datasets.base import Dataset, digest_parts, duplicated, file_listing_digest, metadata_value, not_found
from fmprobe.datasets.manifest import read_layout_csv
from fmprobe.datasets.sources import SEED, DatasetSource, OptionSpec
from fmprobe.datasets.splits import assign_splits, empty_split, group_conflict, load_or_create_split, split_file_for
from fmprobe.errors import DatasetError
from fmprobe.tasks import GROUP

GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
IMAGES = "ISIC_2019_Training_Input"
ALL_COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
CLASS_NAMES = ALL_COLUMNS[:-1]
GROUPINGS = ("lesion", "none")
FRACTIONS = (0.8, 0.1, 0.1)
# per-sample metadata keys (``Split.metadata``) and the metadata-file column each is read from
META_COLUMNS = {"age": "age_approx", "sex": "sex", "site": "anatom_site_general"}
ARCHIVE = "archive"
# the archive a lesion_id's prefix names: BCN_ (BCN20000, Hospital Clinic Barcelona), HAM_ (HAM10000, Vienna),
# MSK4_ (a Memorial Sloan Kettering collection of the ISIC Archive: the challenge's "MSK Dataset")
ARCHIVES = {"BCN": "bcn20000", "HAM": "ham10000", "MSK4": "msk"}
LESION_PREFIX = re.compile(r"^(BCN|HAM|MSK4)_\d+$")
LAYOUT = (
    f"the ISIC 2019 training download has {GROUND_TRUTH}, {METADATA} and {IMAGES}/<image>.jpg; put all three in "
    "the folder given after 'isic2019:'"
)


def _read(path: Path, columns: tuple[str, ...], why: str) -> list[dict[str, str]]:
    return read_layout_csv(path, columns, why, "Is this the ISIC 2019 training file?")[1]


def _ground_truth(root: Path, grouping: str) -> tuple[list[str], np.ndarray]:
    """(image names, class indices into CLASS_NAMES) from the ground-truth file, every row checked."""
    if grouping not in GROUPINGS:
        raise DatasetError(f"isic2019 grouping={grouping!r}: use lesion (default) or none.")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder; {LAYOUT}.")
    gt_path = root / GROUND_TRUTH
    rows = _read(gt_path, ("image",) + ALL_COLUMNS, LAYOUT)
    values = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
    ids: list[str] = []
    labels: list[int] = []
    for line, row in enumerate(rows, start=2):
        name = row["image"]
        if not name:
            raise DatasetError(f"{gt_path}, line {line}: empty image name.")
        bad = [(c, row[c]) for c in ALL_COLUMNS if row[c] not in values]
        if bad:
            raise DatasetError(
                f"{gt_path}, line {line} ({name}): unknown label value(s) {bad}; the class columns are one-hot 0.0/1.0."
            )
        hot = [c for c in ALL_COLUMNS if values[row[c]] == 1]
        if len(hot) != 1:
            raise DatasetError(
                f"{gt_path}, line {line} ({name}): {len(hot)} classes marked ({hot or 'none'}); each image has exactly one."
            )
        if hot[0] == "UNK":
            raise DatasetError(
                f"{gt_path}, line {line} ({name}): labelled UNK. UNK has no training images in ISIC 2019 and is not "
                f"one of the 8 classes ({', '.join(CLASS_NAMES)}); is this the test-set ground truth?"
            )
        ids.append(name)
        labels.append(CLASS_NAMES.index(hot[0]))
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{gt_path}: duplicate image name(s) {duplicated(ids)}.")
    return ids, np.asarray(labels, dtype=np.int64)


def archive_of(lesion_id: str) -> str:
    """The source archive a lesion id names by its prefix (``BCN_0000001`` -> ``bcn20000``), or "" (unknown)."""
    match = LESION_PREFIX.match(lesion_id)
    return ARCHIVES[match.group(1)] if match else ""


def read_metadata(root: Path, ids: list[str], grouping: str = "lesion") -> dict[str, list[str]]:
    """Per-sample metadata aligned with ``ids``: ``group`` (lesion grouping only), then ``age``, ``sex``, ``site``
    (each where its column exists) and ``archive``. Lesion grouping needs the metadata file; ``none`` reads it when
    present and returns {} when it is absent. Touches no image."""
    meta_path = root / METADATA
    if grouping == "none" and not meta_path.is_file():
        return {}
    header, rows = read_layout_csv(
        meta_path, ("image", "lesion_id"),
        f"grouping by lesion needs the metadata file ({LAYOUT}); or use isic2019:{root}?grouping=none for the "
        "study's ungrouped split",
        "Is this the ISIC 2019 training file?",
    )  # fmt: skip
    by_image = {row["image"]: row for row in rows}
    absent = [i for i in ids if i not in by_image]
    if absent:
        raise DatasetError(
            f"{meta_path}: {len(absent)} image(s) of {GROUND_TRUTH} have no metadata row, e.g. {absent[:3]}. "
            "Download the matching ISIC 2019 training metadata."
        )
    picked = [by_image[i] for i in ids]
    out = {key: [metadata_value(r[column]) for r in picked] for key, column in META_COLUMNS.items() if column in header}
    out[ARCHIVE] = [archive_of(r["lesion_id"]) for r in picked]
    if grouping == "lesion":
        # an image without a lesion_id is its own group; the prefix keeps image names and lesion ids apart
        out[GROUP] = [f"lesion:{r['lesion_id']}" if r["lesion_id"] else f"image:{i}" for i, r in zip(ids, picked)]
    return out


def read_labels(root: Path, grouping: str = "lesion") -> tuple[list[str], np.ndarray, list[str] | None]:
    """(image names, class indices into CLASS_NAMES, lesion groups or None); touches no image."""
    ids, labels = _ground_truth(root, grouping)
    return ids, labels, read_metadata(root, ids, grouping)[GROUP] if grouping == "lesion" else None


def _image_folder(root: Path) -> Path:
    folder = root / IMAGES
    nested = folder / IMAGES
    if not folder.is_dir():
        raise not_found(folder, LAYOUT)
    if nested.is_dir() and not any(n.endswith(".jpg") for n in os.listdir(folder)):
        return nested
    return folder


def load_isic2019(root: Path, spec: str, grouping: str = "lesion", seed: int = 0) -> Dataset:
    ids, labels = _ground_truth(root, grouping)
    metadata = read_metadata(root, ids, grouping)
    groups = metadata.get(GROUP)
    folder = _image_folder(root)
    present = set(os.listdir(folder))
    names = [f"{i}.jpg" for i in ids]
    absent = [n for n in names if n not in present]
    if absent:
        raise DatasetError(
            f"{folder}: {len(absent)} image(s) listed in {GROUND_TRUTH} are missing, e.g. {', '.join(absent[:3])}. "
            "Re-download ISIC_2019_Training_Input.zip and unzip it here."
        )
    paths = [folder / n for n in names]
    split_file = split_file_for(root / f"{Path(GROUND_TRUTH).stem}_{grouping}.csv", seed, FRACTIONS)
    assignment = load_or_create_split(split_file, ids, labels, groups, FRACTIONS, seed)
    if groups is not None and (conflict := group_conflict(groups, assignment)):
        at, first, second = conflict
        raise DatasetError(
            f"{split_file}: {groups[at]} ({ids[at]}) is in both {first} and {second}; images "
            "of one lesion must share a split. Delete the file to draw a new grouped split."
        )
    splits = assign_splits(
        ids, labels, paths, assignment, lambda name: empty_split(split_file, name),
        metadata=metadata,
    )
    # the key sees what changes the split (labels, lesion groups, assignment), never age/sex/site: editing those
    # refreshes a cached feature file's metadata instead of re-extracting it
    digest = digest_parts(
        "isic2019", grouping, [hashlib.sha256((root / GROUND_TRUTH).read_bytes()).hexdigest()],
        file_listing_digest(paths, root), assignment.tolist(), *([groups] if groups is not None else []),
    )
    return Dataset(
        name="isic2019",
        spec=spec,
        task="multiclass",
        class_names=CLASS_NAMES,
        splits=splits,
        content_digest=digest,
        primary_metric="balanced_accuracy",
        description=(
            f"ISIC 2019 training set in {root}, split 80/10/10 stratified, "
            f"{'grouped by lesion_id' if groups else 'ungrouped'} (seed {seed}, {split_file.name})"
        ),
        extra={"grouping": grouping},
    )


SOURCE = DatasetSource(
    name="isic2019",
    loader=load_isic2019,
    takes_path=True,
    example="isic2019:data/isic2019?grouping=lesion",
    description="ISIC 2019 training set: 25,331 dermoscopic images, 8 classes, split 80/10/10",
    options=(
        OptionSpec(
            "grouping", "lesion", "lesion: images of one lesion share a split; none: the study's image-level split",
            choices=GROUPINGS,
            hint="use lesion (default: one lesion never spans splits) or none (the study's image-level split)",
        ),
        SEED,
    ),
)

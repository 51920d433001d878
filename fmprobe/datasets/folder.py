"""ImageFolder layout: ``folder:<dir>`` with ``<dir>/<class>/*.png`` or ``<dir>/{train,val,test}/<class>/*``.

Without split folders fmprobe draws a seeded stratified split and saves it in ``<dir>``. With split folders,
``train/`` is required and a missing ``val/`` or ``test/`` is carved from train (stratified, seeded, saved in
``train/``). A top folder named like a split is never read as a class: a mix of split and class folders, or a
split folder spelled otherwise (``Validation/``), is refused with the rename that fixes it.

``?group=REGEX`` reads each image's patient from its file name (its path below the class folder): the first
capture group, or the whole match. Splits keep a patient's images together and given split folders are checked
for a patient in two of them. Without it, file names that look like they encode a patient get one warning.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmprobe.datasets.base import Dataset, digest_parts, file_listing_digest
from fmprobe.datasets.columns import say_once, suggest_group_pattern
from fmprobe.datasets.manifest import ORDER, normalise_label, ordered_classes
from fmprobe.datasets.sources import SEED, SPLIT_FILE, TASK, DatasetSource, OptionSpec
from fmprobe.datasets.splits import (
    DEFAULT_FRACTIONS,
    assign_splits,
    carve_from_train,
    chosen_split_file,
    group_conflict,
    load_or_create_split,
    refuse_duplicates,
)
from fmprobe.errors import DatasetError
from fmprobe.tasks import GROUP, SPLIT_NAMES, TRAIN, SplitName, TaskType

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# Folder names that mean a split (compared lower-case); only SPLIT_NAMES themselves are read as splits.
SPLIT_LIKE = frozenset(SPLIT_NAMES) | {"training", "valid", "validation", "dev", "testing"}
# The Hugging Face imagefolder layout's table; a folder that has one is read by imagefolder: (see imagefolder.py).
HF_METADATA = "metadata.csv"
log = logging.getLogger(__name__)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(folder: Path) -> dict[str, list[Path]]:
    """The image files of each class folder. A dangling or looping symlink is listed too, not dropped: reading
    it then fails by name (or, with ``--on-error skip``, is recorded as skipped)."""
    return {
        c.name: sorted(
            f for f in c.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and (f.is_file() or f.is_symlink())
        )
        for c in _subfolders(folder)
    }


def _split_folders(root: Path) -> list[SplitName]:
    """The split folders at the top of ``root`` (none: a flat class layout), refusing every ambiguous mix."""
    top = _subfolders(root)
    split_like = [p.name for p in top if p.name.lower() in SPLIT_LIKE]
    if not split_like:
        return []
    odd = [name for name in split_like if name not in SPLIT_NAMES]
    if odd:
        raise DatasetError(
            f"{root}: folder(s) {', '.join(f'{n}/' for n in odd)} look like splits but only "
            f"{', '.join(f'{s}/' for s in SPLIT_NAMES)} are read as splits (and never as classes). Rename them."
        )
    classes = [p.name for p in top if p.name not in split_like]
    if classes:
        raise DatasetError(
            f"{root}: a mix of split folders ({', '.join(f'{n}/' for n in split_like)}) and other folders "
            f"({', '.join(f'{n}/' for n in classes)}). Put every class folder under the split folders, or remove "
            "the split folders to let fmprobe draw the split."
        )
    if TRAIN not in split_like:
        raise DatasetError(
            f"{root}: split folder(s) {', '.join(f'{n}/' for n in split_like)} but no train/; missing splits are "
            "drawn from train/. Add train/<class>/ or rename the folder that holds the training images."
        )
    return [s for s in SPLIT_NAMES if s in split_like]


def _listings(root: Path, present: list[SplitName]) -> dict[str, dict[str, list[Path]]]:
    if not present:
        return {"all": _scan(root)}
    listings: dict[str, dict[str, list[Path]]] = {s: _scan(root / s) for s in present}
    for split, listing in listings.items():
        nested = [c for c in listing if c.lower() in SPLIT_LIKE]
        if nested:
            raise DatasetError(
                f"{root / split / nested[0]}: a class folder named like a split inside {split}/ (split folders "
                f"nested twice?). Put the class folders directly under {split}/."
            )
    unseen = sorted({c for listing in listings.values() for c in listing} - set(listings[TRAIN]))
    if unseen:
        raise DatasetError(
            f"{root}: class folder(s) {unseen} exist outside train/ but not in train/; a probe cannot learn a "
            "class it never sees. Add them to train/ or remove them."
        )
    return listings


def _file_id(root: Path, path: Path) -> str:
    sample_id = str(path.relative_to(root))
    try:
        sample_id.encode("utf-8")
    except UnicodeEncodeError:
        raise DatasetError(
            f"{root}: file name {os.fsencode(path)!r} is not valid UTF-8; sample ids are saved as UTF-8 text. "
            "Rename it (e.g. `convmv -f latin1 -t utf8 -r --notest DIR`)."
        ) from None
    return sample_id


def parse_pattern(text: str) -> str:
    """``group=REGEX``: checked here, so a typo fails with the spec, not mid-listing."""
    try:
        re.compile(text)
    except re.error as err:
        raise DatasetError(f"group={text!r} is not a regular expression ({err}).") from None
    return text


GROUP_PATTERN = OptionSpec(
    "group", None, "regex over each file name: its first capture group (or the whole match) is the patient kept together",
    parse_pattern, form="REGEX", digest_default=False,
)  # fmt: skip


@dataclass(frozen=True)
class Listing:
    """Every image of a folder tree: ids (paths below the root), files, label indices, the split folder each
    came from (-1: none) and its name below its class folder (what ``group=`` reads)."""

    ids: list[str]
    paths: list[Path]
    labels: np.ndarray
    given: np.ndarray
    names: list[str]


def _collect(root: Path, listings: dict[str, dict[str, list[Path]]], index: dict[str, int]) -> Listing:
    ids: list[str] = []
    paths: list[Path] = []
    labels: list[int] = []
    given: list[int] = []
    names: list[str] = []
    for split_name, listing in listings.items():
        split = SPLIT_NAMES.index(split_name) if split_name in SPLIT_NAMES else -1  # type: ignore[arg-type]
        base = root / split_name if split >= 0 else root
        for class_name, files in listing.items():
            for f in files:
                ids.append(_file_id(root, f))
                paths.append(f)
                labels.append(index[normalise_label(class_name)])
                given.append(split)
                names.append(f.relative_to(base / class_name).as_posix())
    if not paths:
        raise DatasetError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders.")
    return Listing(ids, paths, np.asarray(labels, dtype=np.int64), np.asarray(given, dtype=np.int8), names)


def groups_from_names(root: Path, listing: Listing, pattern: str) -> list[str]:
    """Each image's patient: the first capture group (or the whole match) of ``pattern`` in its file name."""
    regex = re.compile(pattern)
    groups = []
    for sample_id, name in zip(listing.ids, listing.names, strict=True):
        found = regex.search(name)
        value = (found.group(1) if regex.groups and found.group(1) is not None else found.group(0)) if found else ""
        if not value:
            raise DatasetError(
                f"{root}: file {sample_id!r} ({name!r} below its class folder) does not match group={pattern!r}"
                + (" (it matched an empty string)" if found else "")
                + "; every image needs its patient in its name. Fix the regex, or rename the file."
            )
        groups.append(value)
    return groups


def _assignment(root: Path, present: list[SplitName], listing: Listing, groups: list[str] | None,
                seed: int, fractions: tuple[float, float, float], split_file: str | None, grouping: str) -> np.ndarray:  # fmt: skip
    """Each image's split: drawn (flat layout), or given by the split folders with the missing ones carved."""
    if not present:
        path = chosen_split_file(root, seed, fractions, split_file, root, grouping)
        return load_or_create_split(path, listing.ids, listing.labels, groups, fractions, seed)
    assignment = listing.given.copy()
    if groups is not None and (conflict := group_conflict(groups, assignment)):
        at, first, second = conflict
        raise DatasetError(
            f"{root}: patient {groups[at]!r} (group={grouping!r}) has images in both {first}/ and {second}/ (e.g. "
            f"{listing.ids[at]}); one patient in two splits leaks information. Move them into one split folder."
        )
    carved = carve_from_train(
        assignment, listing.ids, listing.labels, groups,
        lambda carve: chosen_split_file(root / TRAIN, seed, carve, split_file, root, grouping), seed, fractions,
    )  # fmt: skip
    if split_file is not None and not carved:
        raise DatasetError(f"{root}: split_file={split_file} but train/, val/ and test/ are all given: nothing is drawn.")
    return assignment


def _classes(root: Path, listings: dict[str, dict[str, list[Path]]], task: TaskType | None, order: tuple[str, ...] | None) -> list[str]:
    found = {normalise_label(c) for listing in listings.values() for c in listing}
    if len(found) < 2:
        raise DatasetError(
            f"{root}: found {len(found)} class folder(s) {sorted(found)}; expected one sub-folder per class "
            "(at least two), optionally under train/, val/, test/."
        )
    return ordered_classes(str(root), found, task, order)


def load_folder(
    root: Path,
    spec: str,
    task: TaskType | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    order: tuple[str, ...] | None = None,
    group: str | None = None,
    split_file: str | None = None,
) -> Dataset:
    """Load an ImageFolder tree; ``order`` declares the grades (class folders) of ``task=ordinal``, ``group`` the
    file-name regex of each image's patient, ``split_file`` where a drawn split is kept."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder. folder:<dir> expects <dir>/<class>/<image files>.")
    if any((root / d / HF_METADATA).is_file() for d in ("", TRAIN)):
        say_once(log.warning, f"{root}: has a {HF_METADATA} (Hugging Face imagefolder layout); folder: reads only the "
                 f"class folders and ignores it. Use imagefolder:{root} to read its labels and columns.")  # fmt: skip
    present = _split_folders(root)
    listings = _listings(root, present)
    class_names = _classes(root, listings, task, order)
    listing = _collect(root, listings, {name: i for i, name in enumerate(class_names)})
    groups = groups_from_names(root, listing, group) if group is not None else None
    if groups is None:
        suggest_group_pattern(str(root), listing.names, class_names)
    assignment = _assignment(root, present, listing, groups, seed, fractions, split_file, group or "")
    refuse_duplicates(listing.paths, assignment, lambda i: listing.ids[i], str(root))
    splits = assign_splits(
        listing.ids, listing.labels, listing.paths, assignment,
        lambda name: f"{root}: the {name} split is empty; "
        + (f"put images in {root / name}." if name in present else "add images (a few per class) to draw it from."),
        metadata={GROUP: groups} if groups is not None else None,
    )  # fmt: skip
    inferred: TaskType = "binary" if len(class_names) == 2 else "multiclass"
    digest = digest_parts(file_listing_digest(listing.paths, root), listing.ids, listing.labels.tolist(), assignment.tolist())
    return Dataset(root.name, spec, task or inferred, tuple(class_names), splits, digest, description=f"image folder {root}")


SOURCE = DatasetSource(
    name="folder",
    loader=load_folder,
    takes_path=True,
    example="folder:data/images",
    description="an ImageFolder tree: <dir>/<class>/<images>, optionally under train/, val/, test/",
    options=(TASK, SEED, ORDER, GROUP_PATTERN, SPLIT_FILE),
)

"""ImageFolder layout: ``folder:<dir>`` with ``<dir>/<class>/*.png`` or ``<dir>/{train,val,test}/<class>/*``.

Without split folders fmprobe draws a seeded stratified split and saves it in ``<dir>``. With split folders,
``train/`` is required and a missing ``val/`` or ``test/`` is carved from train (stratified, seeded, saved in
``train/``). A top folder named like a split is never read as a class: a mix of split and class folders, or a
split folder spelled otherwise (``Validation/``), is refused with the rename that fixes it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fmprobe.datasets.base import Dataset, digest_parts, file_listing_digest
from fmprobe.datasets.manifest import ORDER, normalise_label, ordered_classes
from fmprobe.datasets.sources import SEED, TASK, DatasetSource
from fmprobe.datasets.splits import (
    DEFAULT_FRACTIONS,
    assign_splits,
    load_or_create_split,
    refuse_duplicates,
    split_file_for,
)
from fmprobe.errors import DatasetError
from fmprobe.tasks import SPLIT_NAMES, TEST, TRAIN, VAL, SplitName, TaskType

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# Folder names that mean a split (compared lower-case); only SPLIT_NAMES themselves are read as splits.
SPLIT_LIKE = frozenset(SPLIT_NAMES) | {"training", "valid", "validation", "dev", "testing"}
# The share of train/ that becomes a missing val/ or test/ (the rest stays train).
CARVE_SHARE = 0.15


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


def _carve(root: Path, present: list[SplitName], assignment: np.ndarray, ids: list[str], labels: np.ndarray,
           seed: int, fractions: tuple[float, float, float]) -> None:  # fmt: skip
    """Draw the splits missing from ``present`` out of train (seeded, stratified, saved in ``train/``)."""
    missing = [s for s in (VAL, TEST) if s not in present]
    if not missing:
        return
    carve = fractions if len(missing) == 2 else (1 - CARVE_SHARE, CARVE_SHARE * (VAL in missing), CARVE_SHARE * (TEST in missing))
    in_train = np.flatnonzero(assignment == 0)
    split_file = split_file_for(root / TRAIN, seed, carve)
    sub = load_or_create_split(split_file, [ids[i] for i in in_train], labels[in_train], None, carve, seed)
    assignment[in_train] = sub


def load_folder(
    root: Path,
    spec: str,
    task: TaskType | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    order: tuple[str, ...] | None = None,
) -> Dataset:
    """Load an ImageFolder tree; ``order`` declares the grades (class folders) of ``task=ordinal``."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder. folder:<dir> expects <dir>/<class>/<image files>.")
    present = _split_folders(root)
    listings = _listings(root, present)
    found = {normalise_label(c) for listing in listings.values() for c in listing}
    if len(found) < 2:
        raise DatasetError(
            f"{root}: found {len(found)} class folder(s) {sorted(found)}; expected one sub-folder per class "
            "(at least two), optionally under train/, val/, test/."
        )
    class_names = ordered_classes(str(root), found, task, order)
    index = {name: i for i, name in enumerate(class_names)}
    ids: list[str] = []
    paths: list[Path] = []
    labels: list[int] = []
    given: list[int] = []
    for split_name, listing in listings.items():
        for class_name, files in listing.items():
            for f in files:
                ids.append(_file_id(root, f))
                paths.append(f)
                labels.append(index[normalise_label(class_name)])
                given.append(SPLIT_NAMES.index(split_name) if split_name in SPLIT_NAMES else -1)  # type: ignore[arg-type]
    if not paths:
        raise DatasetError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders.")
    label_array = np.asarray(labels, dtype=np.int64)
    assignment = np.asarray(given, dtype=np.int8)
    if not present:
        assignment = load_or_create_split(split_file_for(root, seed, fractions), ids, label_array, None, fractions, seed)
    else:
        _carve(root, present, assignment, ids, label_array, seed, fractions)
    refuse_duplicates(paths, assignment, lambda i: ids[i], str(root))
    splits = assign_splits(
        ids, label_array, paths, assignment,
        lambda name: f"{root}: the {name} split is empty; "
        + (f"put images in {root / name}." if name in present else "add images (a few per class) to draw it from."),
    )  # fmt: skip
    inferred: TaskType = "binary" if len(class_names) == 2 else "multiclass"
    return Dataset(
        name=root.name,
        spec=spec,
        task=task or inferred,
        class_names=tuple(class_names),
        splits=splits,
        content_digest=digest_parts(file_listing_digest(paths, root), ids, labels, assignment.tolist()),
        description=f"image folder {root}",
    )


SOURCE = DatasetSource(
    name="folder",
    loader=load_folder,
    takes_path=True,
    example="folder:data/images",
    description="an ImageFolder tree: <dir>/<class>/<images>, optionally under train/, val/, test/",
    options=(TASK, SEED, ORDER),
)

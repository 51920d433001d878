"""ImageFolder layout: ``folder:<dir>`` with ``<dir>/<class>/*.png`` or ``<dir>/{train,val,test}/<class>/*``.

Without split folders fmprobe draws a seeded stratified split and saves it in ``<dir>``; with ``train/`` and
``test/`` but no ``val/``, validation is carved from train (stratified, seeded, saved).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmprobe.datasets.base import Dataset, digest_parts, file_listing_digest
from fmprobe.datasets.sources import SEED, TASK, DatasetSource
from fmprobe.datasets.splits import DEFAULT_FRACTIONS, assign_splits, load_or_create_split, split_file_for
from fmprobe.errors import DatasetError
from fmprobe.tasks import SPLIT_NAMES, TaskType

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _scan(folder: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {
        c.name: sorted(f for f in c.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()) for c in classes
    }


def load_folder(
    root: Path,
    spec: str,
    task: TaskType | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> Dataset:
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder. folder:<dir> expects <dir>/<class>/<image files>.")
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    listings = {s: _scan(root / s) for s in SPLIT_NAMES if (root / s).is_dir()} if has_splits else {"all": _scan(root)}
    class_names = sorted({c for listing in listings.values() for c in listing})
    if len(class_names) < 2:
        raise DatasetError(
            f"{root}: found {len(class_names)} class folder(s) {class_names}; expected one sub-folder per class "
            "(at least two), optionally under train/, val/, test/."
        )
    ids: list[str] = []
    paths: list[Path] = []
    labels: list[int] = []
    given: list[int] = []
    for split_name, listing in listings.items():
        for class_name, files in listing.items():
            for f in files:
                ids.append(str(f.relative_to(root)))
                paths.append(f)
                labels.append(class_names.index(class_name))
                given.append(SPLIT_NAMES.index(split_name) if split_name in SPLIT_NAMES else -1)  # type: ignore[arg-type]
    if not paths:
        raise DatasetError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders.")
    label_array = np.asarray(labels, dtype=np.int64)
    assignment = np.asarray(given, dtype=np.int8)
    if not has_splits:
        assignment = load_or_create_split(split_file_for(root, seed, fractions), ids, label_array, None, fractions, seed)
    elif "val" not in listings:
        in_train = np.flatnonzero(assignment == 0)
        carve = (0.85, 0.15, 0.0)
        sub = load_or_create_split(
            split_file_for(root / "train", seed, carve), [ids[i] for i in in_train], label_array[in_train], None,
            carve, seed,
        )
        assignment[in_train] = sub
    splits = assign_splits(
        ids, label_array, paths, assignment,
        lambda name: f"{root}: the {name} split is empty; put images in {root / name} or drop split folders.",
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
    options=(TASK, SEED),
)

"""The Hugging Face ``imagefolder`` layout: ``imagefolder:<dir>``.

``<dir>/metadata.csv`` lists the images in a ``file_name`` column (relative to the CSV's folder), or each split
folder has its own (``<dir>/train/metadata.csv``, ``<dir>/validation/metadata.csv``, ``<dir>/test/metadata.csv``;
Hugging Face's split names, ``validation`` included). The label is the ``label`` column, the column named by
``?label=``, or, where neither exists and every image sits in a class folder, the folder names (as Hugging Face
infers them); every other column is kept as sample metadata. A ``split`` column of a flat layout is read as the
split; otherwise (and for split folders missing val or test) fmprobe draws it, seeded and saved in the data folder.

This is a separate source rather than something ``folder:`` detects: a class-folder tree that happens to hold
a ``metadata.csv`` keeps loading as before, and ``folder:`` says once that ``imagefolder:`` reads the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fmprobe.datasets.base import Dataset, not_found
from fmprobe.datasets.columns import say_once
from fmprobe.datasets.folder import HF_METADATA as METADATA
from fmprobe.datasets.folder import IMAGE_SUFFIXES
from fmprobe.datasets.manifest import (
    GROUP_COLUMN,
    ORDER,
    Columns,
    SplitPlan,
    Table,
    dataset_from_table,
    parse_columns,
    read_csv_rows,
)
from fmprobe.datasets.sources import SEED, SPLIT_FILE, TASK, DatasetSource, OptionSpec
from fmprobe.datasets.splits import DEFAULT_FRACTIONS
from fmprobe.errors import DatasetError
from fmprobe.registry import closest
from fmprobe.tasks import TRAIN, TaskType

FILE_NAME = "file_name"  # Hugging Face's column of image paths
# Hugging Face's split folder names (compared lower-case) and the split each is.
SPLIT_DIRS = {"train": "train", "training": "train", "validation": "val", "valid": "val", "val": "val", "dev": "val",
              "test": "test", "testing": "test"}  # fmt: skip
# Columns the table gets besides the CSV's (names no CSV header is stripped to: they start with a space).
SPLIT_FOLDER, CLASS_FOLDER = " split folder", " class folder"
log = logging.getLogger(__name__)

LABEL = OptionSpec(
    "label", None, "the label column, or several 0/1 columns (multi-label); default: label, else the class folders",
    parse_columns, form="COL[,COL]",
)  # fmt: skip


def _places(root: Path) -> list[tuple[str, Path]]:
    """(split folder, its metadata.csv) for each split folder with one; ``("", <dir>/metadata.csv)`` when flat."""
    if (root / METADATA).is_file():
        return [("", root / METADATA)]
    found = sorted((p.name, p / METADATA) for p in root.iterdir() if p.is_dir() and p.name.lower() in SPLIT_DIRS)
    places = [(name, path) for name, path in found if path.is_file()]
    if not places:
        raise not_found(root / METADATA, f"the imagefolder layout lists its images in {METADATA} ({FILE_NAME} column), "
                        "at the top or in each split folder (train/, validation/, test/); for plain class folders use "
                        f"folder:{root}")  # fmt: skip
    if len({SPLIT_DIRS[n.lower()] for n, _ in places}) != len(places) or TRAIN not in {SPLIT_DIRS[n.lower()] for n, _ in places}:
        raise DatasetError(f"{root}: split folders {[n for n, _ in places]}: give one train folder and at most one "
                           "validation and one test folder, each with its metadata.csv.")  # fmt: skip
    return places


def read_imagefolder(root: Path) -> tuple[Table, Path | None]:
    """Every split's ``metadata.csv`` as one table: ``file_name`` made relative to ``root``, the split folder (if
    any) and the class folder (if every image has one) as extra columns; columns missing from one file are
    empty there. Also the train folder of a split layout (where a carved split is saved), else None."""
    header: list[str] = []
    rows: list[dict[str, str]] = []
    lines: list[str] = []
    places = _places(root)
    for split_dir, path in places:
        names, table = read_csv_rows(path)
        if FILE_NAME not in names:
            near = closest(FILE_NAME, names, 1)
            raise DatasetError(f"{path}: no {FILE_NAME!r} column (found {names}"
                               + (f"; closest: {near[0]!r}" if near else "") + "); the imagefolder layout names each "
                               f"image in {FILE_NAME}. For another column name use csv:{path}?path=COLUMN.")  # fmt: skip
        header += [n for n in names if n not in header]
        for line, row in enumerate(table, start=2):
            name = row[FILE_NAME]
            parts = Path(name).parts
            row = {**row, FILE_NAME: str(Path(split_dir) / name), CLASS_FOLDER: parts[0] if len(parts) > 1 else ""}
            if split_dir:
                row[SPLIT_FOLDER] = SPLIT_DIRS[split_dir.lower()]
            rows.append(row)
            lines.append(f"{path.relative_to(root)} line {line}")
    extra = [CLASS_FOLDER] + ([SPLIT_FOLDER] if SPLIT_FOLDER in rows[0] else []) if rows else []
    header += extra
    train = next((root / d for d, _ in places if d and SPLIT_DIRS[d.lower()] == TRAIN), None)
    return Table(str(root), header, [{h: row.get(h, "") for h in header} for row in rows], lines), train


def _label_columns(table: Table, label: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The spec's label columns, the ``label`` column, else the class folders (said once) if every image has one."""
    if label is not None or "label" in table.header:
        return label
    if not all(row[CLASS_FOLDER] for row in table.rows):
        raise DatasetError(
            f"{table.where}: no label: {METADATA} has no 'label' column and not every image is in a class folder. "
            f"Name the label column with ?label=COLUMN (columns: {[h for h in table.header if not h.startswith(' ')]})."
        )
    say_once(log.info, f"{table.where}: labels from the class folder names (as Hugging Face infers them).")
    return (CLASS_FOLDER,)


def _unlisted(root: Path, table: Table) -> None:
    """Say once how many image files under ``root`` no metadata.csv lists (they are left out)."""
    listed = {str(Path(row[FILE_NAME])) for row in table.rows}
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and str(p.relative_to(root)) not in listed]
    if files:
        say_once(log.warning, f"{root}: {len(files)} image file(s) are in no {METADATA} and are left out, e.g. "
                 f"{files[0].relative_to(root)}.")  # fmt: skip


def load_imagefolder(
    root: Path,
    spec: str,
    task: TaskType | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    order: tuple[str, ...] | None = None,
    label: tuple[str, ...] | None = None,
    group: str | None = None,
    split_file: str | None = None,
) -> Dataset:
    """Load a Hugging Face imagefolder tree; options as for ``csv:`` (``label``/``group`` name columns)."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder. imagefolder:<dir> expects <dir>/{METADATA} with a {FILE_NAME} column.")
    table, train_dir = read_imagefolder(root)
    if not table.rows:
        raise DatasetError(f"{root}: the {METADATA} file(s) list no images.")
    _unlisted(root, table)
    labels = _label_columns(table, label)
    if labels != (CLASS_FOLDER,):  # the folder names are a label, never metadata
        table = Table(table.where, [h for h in table.header if h != CLASS_FOLDER], table.rows, table.lines)
    split_column = SPLIT_FOLDER if train_dir is not None else None
    columns = Columns(FILE_NAME, labels, group, split_column)
    carve_at = train_dir / METADATA if train_dir is not None else None
    plan = SplitPlan(root / METADATA, root, seed, fractions, split_file, group or "", carve_at)
    description = f"imagefolder {root}" + (" (split folders)" if train_dir is not None else "")
    return dataset_from_table(table, spec, columns, plan, root.name, description, task, None, order)


SOURCE = DatasetSource(
    name="imagefolder",
    loader=load_imagefolder,
    takes_path=True,
    example="imagefolder:data/hf_images",
    description="a Hugging Face imagefolder tree: metadata.csv (file_name, label, other columns as metadata), or per split",
    options=(TASK, SEED, ORDER, LABEL, GROUP_COLUMN, SPLIT_FILE),
)

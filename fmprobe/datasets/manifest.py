"""CSV manifests: ``csv:<manifest.csv>``.

Columns: ``path`` (relative to the manifest's folder), then either ``label`` (one class name per row) or several
0/1 label columns (multi-label); optional ``split`` (train/val/test), ``group`` (patient or lesion id) and ``id``.
The spec maps other names to those roles (``csv:labels.csv?path=file&label=dx&group=patient_id&split=fold``);
every other column of a single-label manifest (or of one with ``label=A,B`` 0/1 columns) is kept as per-sample
metadata, never refused. Without a split column, fmprobe draws a seeded split grouped by the group column and
saves it beside the manifest (or at ``?split_file=``).

The core, :func:`dataset_from_table`, takes any table of rows; the Hugging Face ``imagefolder`` layout builds
one from its ``metadata.csv`` files.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmprobe.datasets.base import Dataset, digest_parts, file_listing_digest, not_found
from fmprobe.datasets.columns import metadata_columns, say_once, suggest_group_column
from fmprobe.datasets.sources import SEED, SPLIT_FILE, TASK, DatasetSource, OptionSpec
from fmprobe.datasets.splits import (
    DEFAULT_FRACTIONS,
    assign_splits,
    carve_from_train,
    chosen_split_file,
    group_conflict,
    load_or_create_split,
    refuse_duplicates,
    resolved,
)
from fmprobe.errors import DatasetError
from fmprobe.registry import closest
from fmprobe.tasks import GROUP, SPLIT_NAMES, TaskType

RESERVED = ("path", "split", "group", "id")
log = logging.getLogger(__name__)


def parse_order(text: str) -> tuple[str, ...]:
    """``order=none,mild,severe``: the declared grades of an ordinal task, lowest first."""
    grades = tuple(g.strip() for g in text.split(","))
    if len(grades) < 2 or "" in grades or len(set(grades)) != len(grades):
        raise DatasetError(
            f"order={text!r}: list every grade once, lowest first, separated by commas (e.g. order=none,mild,severe)."
        )
    return grades


# The ordinal grades' option of the sources whose labels are words (csv, folder), declared once.
ORDER = OptionSpec(
    "order", None, "the grades of task=ordinal, lowest first (needed when the labels are words)", parse_order, form="A,B,C"
)


def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV (UTF-8, optional BOM) into a header and rows, with errors naming the file and line."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: manifest not found. Check the path after 'csv:'.") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read manifest ({err}).") from err
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"{path}: not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r}). Save the manifest as UTF-8."
        ) from None
    try:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        table = [row for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as err:
        raise DatasetError(f"{path}: malformed CSV ({err}). Check quoting on that line.") from None
    if not table:
        raise DatasetError(f"{path}: the manifest is empty; it needs a header with 'path' and label column(s).")
    header = [h.strip() for h in table[0]]
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise DatasetError(f"{path}: duplicate column names {dupes}.")
    rows = []
    for line, cells in enumerate(table[1:], start=2):
        if len(cells) != len(header):
            raise DatasetError(f"{path}, line {line}: {len(cells)} fields but the header has {len(header)}.")
        rows.append({h: c.strip() for h, c in zip(header, cells)})
    return header, rows


def read_layout_csv(path: Path, columns: Sequence[str], missing: str, hint: str) -> tuple[list[str], list[dict[str, str]]]:
    """A published CSV (``train.csv``, ``ISIC_2019_Training_GroundTruth.csv``) with the columns an adapter needs:
    a missing file says ``missing`` (what the layout is), a missing column its closest match and ``hint``."""
    if not path.is_file():
        raise not_found(path, missing)
    header, rows = read_csv_rows(path)
    absent = [c for c in columns if c not in header]
    if absent:
        near = {c: closest(c, header, 1) for c in absent}
        hints = "; ".join(f"{c!r} (closest: {n[0]!r})" if n else repr(c) for c, n in near.items())
        raise DatasetError(f"{path}: missing column(s) {hints}; found {header}. {hint}")
    if not rows:
        raise DatasetError(f"{path}: no rows.")
    return header, rows


def parse_columns(text: str) -> tuple[str, ...]:
    """``label=dx`` (one class column) or ``label=effusion,edema`` (0/1 columns, multi-label)."""
    names = tuple(c.strip() for c in text.split(","))
    if "" in names or len(set(names)) != len(names):
        raise DatasetError(f"label={text!r}: name the label column (label=dx), or each 0/1 column once (label=a,b).")
    return names


# The column-role options of the table sources (csv, imagefolder), declared once; added after names existed.
PATH_COLUMN = OptionSpec("path", None, "the column of image paths (default: path)", digest_default=False)
LABEL_COLUMNS = OptionSpec(
    "label", None, "the label column, or several 0/1 columns (multi-label); default: label, else every other column",
    parse_columns, form="COL[,COL]", digest_default=False,
)
GROUP_COLUMN = OptionSpec(
    "group", None, "the patient/lesion column a split keeps together (default: group, if present)", digest_default=False
)
SPLIT_COLUMN = OptionSpec("split", None, "the column of train/val/test names (default: split, if present)", digest_default=False)
ID_COLUMN = OptionSpec("id", None, "the column of sample ids (default: id if present, else the path)", digest_default=False)
COLUMN_OPTIONS = (PATH_COLUMN, LABEL_COLUMNS, GROUP_COLUMN, SPLIT_COLUMN, ID_COLUMN)


@dataclass(frozen=True)
class Table:
    """Rows of text cells and where each came from: ``where`` names the table in errors, ``lines[i]`` row i
    (``line 5``, or ``train/metadata.csv line 5`` for a table read from several files)."""

    where: str
    header: list[str]
    rows: list[dict[str, str]]
    lines: list[str]


@dataclass(frozen=True)
class Columns:
    """The columns the spec named for each role (``None``: the role's default column, see the options)."""

    path: str | None = None
    label: tuple[str, ...] | None = None
    group: str | None = None
    split: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Roles:
    """The columns found for each role in one table; ``labels`` are one class column unless ``multilabel``."""

    path: str
    labels: tuple[str, ...]
    multilabel: bool
    group: str | None
    split: str | None
    id: str | None

    @property
    def used(self) -> tuple[str, ...]:
        return tuple(c for c in (self.path, *self.labels, self.group, self.split, self.id) if c)


def _column(table: Table, role: str, given: str | None, default: str, required: bool = False) -> str | None:
    """The column playing ``role``: the one the spec named (it must exist), else ``default`` if present."""
    if given is None:
        if default in table.header:
            return default
        if required:
            near = closest(default, table.header, 1) or [
                h for h in table.header if re.search(r"\.(png|jpe?g|bmp|tiff?|webp|dcm)$", table.rows[0][h], re.I)
            ]
            raise DatasetError(
                f"{table.where}: no {default!r} column (found {table.header}). Name the column of image paths with "
                f"?{role}=COLUMN" + (f" (e.g. ?{role}={near[0]})." if near else ".")
            )
        return None
    if given not in table.header:
        near = closest(given, table.header, 1)
        raise DatasetError(
            f"{table.where}: {role}={given!r} is not a column" + (f" (closest: {near[0]!r})" if near else "")
            + f"; found {table.header}."
        )
    return given


def resolve_roles(table: Table, columns: Columns) -> Roles:
    """Which column plays which role in ``table``: the spec's mapping, else the default names. Without a label
    column every column that plays no other role is a 0/1 label (multi-label), as before metadata existed."""
    path = _column(table, "path", columns.path, "path", required=True)
    group = _column(table, "group", columns.group, "group")
    split = _column(table, "split", columns.split, "split")
    sample_id = _column(table, "id", columns.id, "id")
    taken = {c for c in (path, group, split, sample_id) if c}
    if columns.label is not None:
        for name in columns.label:
            _column(table, "label", name, name)
        labels, multilabel = columns.label, len(columns.label) > 1
    elif "label" in table.header:
        labels, multilabel = ("label",), False
    else:
        labels, multilabel = tuple(h for h in table.header if h not in taken), True
        if not labels:
            raise DatasetError(f"{table.where}: no label columns; add a 'label' column (or ?label=COLUMN) or 0/1 columns.")
    both = sorted(taken & set(labels))
    if both:
        raise DatasetError(f"{table.where}: column(s) {both} named both as a label and as path/group/split/id.")
    return Roles(path, labels, multilabel, group, split, sample_id)  # type: ignore[arg-type]


def _parse_multilabel(table: Table, label_columns: Sequence[str]) -> np.ndarray:
    values = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
    labels = np.zeros((len(table.rows), len(label_columns)), dtype=np.int64)
    for r, row in enumerate(table.rows):
        for c, column in enumerate(label_columns):
            value = row[column]
            if value.lower() in MISSING_LABELS:
                raise DatasetError(
                    f"{table.where}, {table.lines[r]}: missing value ({value!r}) in label column {column!r}. Give 0 or "
                    "1, or drop the row."
                )
            if value not in values:
                raise DatasetError(
                    f"{table.where}, {table.lines[r]}: label column {column!r} has value {value!r}; multi-label columns "
                    "must be 0 or 1. Without a 'label' column every other column is read as a 0/1 label: name the "
                    "label columns with ?label=A,B (the others are kept as metadata), or ?label=COLUMN for one class "
                    "column."
                )
            labels[r, c] = values[value]
    return labels


MISSING_LABELS = ("", "na", "n/a", "nan", "null")  # spellings of "no label" (compared lower-case)


def normalise_label(text: str) -> str:
    """One spelling per class: numbers are read as numbers (``1``, ``1.0`` and ``01`` are the class ``1``;
    ``2.50`` is ``2.5``), everything else is kept as written."""
    try:
        value = float(text)
    except ValueError:
        return text
    if not np.isfinite(value):
        return text
    return str(int(value)) if value.is_integer() else repr(value)


def ordered_classes(where: str, names: set[str], task: TaskType | None, order: tuple[str, ...] | None) -> list[str]:
    """The class names in label order: the declared ``order`` (checked against the labels found), else numbers
    as numbers (ordinal grades keep their order) and words alphabetically.

    Word grades of an ordinal task have no order fmprobe could know (``none, mild, severe`` sorts as
    ``mild < none < severe``), so they need ``?order=``."""
    if order is not None:
        if task != "ordinal":
            raise DatasetError(f"{where}: order= declares the grades of an ordinal task; add task=ordinal or drop order=.")
        grades = [normalise_label(g) for g in order]
        missing, extra = sorted(names - set(grades)), [g for g in grades if g not in names]
        if missing or extra:
            raise DatasetError(
                f"{where}: order={','.join(order)} does not match the labels found ({', '.join(sorted(names))}): "
                + "; ".join(p for p in (f"missing {missing}" if missing else "", f"not found {extra}" if extra else "") if p)
                + ". List every label once, lowest first."
            )
        return grades
    try:
        return sorted(names, key=lambda n: float(n))
    except ValueError:
        if task == "ordinal":
            raise DatasetError(
                f"{where}: task=ordinal with word labels ({', '.join(sorted(names))}) needs their order; fmprobe "
                "will not sort grades alphabetically. Add order=A,B,C to the spec listing every label, lowest first "
                "(e.g. ?task=ordinal&order=none,mild,severe)."
            ) from None
        return sorted(names)


def _single_label(
    table: Table, column: str, classes: list[str] | None, task: TaskType | None, order: tuple[str, ...] | None
) -> tuple[np.ndarray, list[str]]:
    """One class name per row, in the declared ``classes`` order or :func:`ordered_classes`."""
    for r, row in enumerate(table.rows):
        if row[column].lower() in MISSING_LABELS:
            raise DatasetError(
                f"{table.where}, {table.lines[r]}: missing label ({row[column]!r}) in {column!r}; "
                f"{', '.join(repr(m) for m in MISSING_LABELS)} mean 'no label'. Give the label or drop the row."
            )
    given = [normalise_label(row[column]) for row in table.rows]
    values = set(given)
    if classes is not None:
        unknown_labels = sorted(values - set(classes))
        if unknown_labels:
            raise DatasetError(f"{table.where}: unknown labels {unknown_labels[:5]}; the declared classes are {classes}.")
        class_names = list(classes)
    else:
        class_names = ordered_classes(table.where, values, task, order)
    if len(class_names) < 2:
        raise DatasetError(f"{table.where}: only one class ({class_names}); a classifier needs at least two.")
    index = {name: i for i, name in enumerate(class_names)}
    return np.asarray([index[label] for label in given], dtype=np.int64), class_names


def _labels(
    table: Table, roles: Roles, classes: list[str] | None, task: TaskType | None, order: tuple[str, ...] | None
) -> tuple[np.ndarray, list[str], TaskType]:
    """(labels, class names, task type) from a class column or 0/1 columns (multi-label)."""
    inferred: TaskType
    if not roles.multilabel:
        labels, class_names = _single_label(table, roles.labels[0], classes, task, order)
        inferred = "binary" if len(class_names) == 2 else "multiclass"
    else:
        labels, class_names, inferred = _parse_multilabel(table, roles.labels), list(roles.labels), "multilabel"
    if task is not None and task != inferred and not (task == "ordinal" and inferred in ("binary", "multiclass")):
        raise DatasetError(f"{table.where}: the labels describe a {inferred} task; task={task} does not fit them.")
    return labels, class_names, task or inferred


def _sample_ids(table: Table, roles: Roles) -> list[str]:
    """The id column, else the path: unique, one per row."""
    for r, row in enumerate(table.rows):
        if not row[roles.path]:
            raise DatasetError(f"{table.where}, {table.lines[r]}: empty {roles.path!r}.")
    ids = [(row[roles.id] if roles.id else "") or row[roles.path] for row in table.rows]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:3] if len(ids) < 5000 else _first_dupes(ids)
        raise DatasetError(f"{table.where}: duplicate sample ids {dupes}; each image may appear once.")
    return ids


def _groups(table: Table, roles: Roles, ids: list[str]) -> list[str] | None:
    """The group column's values; a row with an empty cell is its own group (its id), said once."""
    if roles.group is None:
        suggest_group_column(table.where, table.header, table.rows, roles.used)
        return None
    groups = [row[roles.group] or ids[r] for r, row in enumerate(table.rows)]
    empty = [r for r, row in enumerate(table.rows) if not row[roles.group]]
    if empty:
        say_once(
            log.warning,
            f"{table.where}: {len(empty)} row(s) with an empty {roles.group!r} (first: {table.lines[empty[0]]}); each "
            "is kept as its own group. Fill the column if some of them share a patient.",
        )
    return groups


@dataclass(frozen=True)
class SplitPlan:
    """How a table's split is drawn when it has no split column: the persisted file's default place (the data
    path it is named after), the user's ``split_file``, the data folder relative paths start from, the seed and
    fractions, and the grouping the user chose (tags the default file name). With ``carve_at`` a split column
    (split folders) may leave out val or test: they are carved from train, persisted as named after ``carve_at``."""

    data_path: Path
    root: Path
    seed: int = 0
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    split_file: str | None = None
    grouping: str = ""
    carve_at: Path | None = None


def _assignment(
    table: Table, roles: Roles, ids: list[str], labels: np.ndarray, groups: list[str] | None, plan: SplitPlan
) -> tuple[np.ndarray, Path | None]:
    """Each row's split (0 train, 1 val, 2 test) and the split file it came from (None: the split column)."""
    if roles.split is not None:
        bad = sorted({row[roles.split] for row in table.rows} - set(SPLIT_NAMES))
        if bad:
            raise DatasetError(f"{table.where}: unknown split names {bad} in {roles.split!r}; use train, val or test.")
        given = np.asarray([SPLIT_NAMES.index(row[roles.split]) for row in table.rows], dtype=np.int8)  # type: ignore[arg-type]
        _refuse_group_conflict(table, roles, groups, given, None)  # before carving: the fix is the given splits
        carved: list[Path] = []

        def carve_file(fractions: tuple[float, float, float]) -> Path:
            carved.append(_carve_file(plan, fractions))
            return carved[-1]

        if plan.carve_at is not None and (given == 0).any():
            carve_from_train(given, ids, labels, groups, carve_file, plan.seed, plan.fractions)
        if plan.split_file is not None and not carved:
            raise DatasetError(
                f"{table.where}: split_file={plan.split_file} but the split comes from the {roles.split!r} column; "
                "drop one of the two."
            )
        return given, (carved[0] if carved else None)
    split_path = chosen_split_file(plan.data_path, plan.seed, plan.fractions, plan.split_file, plan.root, plan.grouping)
    return load_or_create_split(split_path, ids, labels, groups, plan.fractions, plan.seed), split_path


def _carve_file(plan: SplitPlan, fractions: tuple[float, float, float]) -> Path:
    assert plan.carve_at is not None
    return chosen_split_file(plan.carve_at, plan.seed, fractions, plan.split_file, plan.root, plan.grouping)


def _refuse_group_conflict(table: Table, roles: Roles, groups: list[str] | None, assignment: np.ndarray, split_path: Path | None) -> None:
    if groups is None or not (conflict := group_conflict(groups, assignment)):
        return
    at, first, second = conflict
    fix = (
        f"Fix the {roles.split!r} column, or remove it to let fmprobe split by group."
        if split_path is None
        else f"The saved split {split_path} was not drawn by this grouping: delete it (or give ?split_file=NEW.csv) "
        "to draw a grouped one."
    )
    raise DatasetError(
        f"{table.where}: group {groups[at]!r} appears in both {first} and {second}; one patient in two splits leaks "
        f"information. {fix}"
    )


def dataset_from_table(
    table: Table, spec: str, columns: Columns, plan: SplitPlan, name: str, description: str,
    task: TaskType | None = None, classes: list[str] | None = None, order: tuple[str, ...] | None = None,
) -> Dataset:  # fmt: skip
    """A dataset from a table of image paths (relative to ``plan.root``), labels and anything else: the spec's
    column roles, labels, ids, the split (column or persisted file), group checks, and the other columns as
    metadata. The content digest covers files, ids, labels, split and classes, never the metadata: editing an
    age column must not re-extract features (the group enters through the split it draws)."""
    roles = resolve_roles(table, columns)
    labels, class_names, task = _labels(table, roles, classes, task, order)
    ids = _sample_ids(table, roles)
    paths = [resolved(plan.root / row[roles.path]) for row in table.rows]
    groups = _groups(table, roles, ids)
    assignment, split_path = _assignment(table, roles, ids, labels, groups, plan)
    _refuse_group_conflict(table, roles, groups, assignment, split_path)
    refuse_duplicates(paths, assignment, lambda i: f"{table.lines[i]} ({table.rows[i][roles.path]!r})", table.where)
    metadata = metadata_columns(table.where, table.header, table.rows, roles.used)
    if groups is not None:
        metadata = {GROUP: tuple(groups), **metadata}
    splits = assign_splits(
        ids, labels, paths, assignment, lambda split: f"{table.where}: the {split} split is empty; every split needs samples.",
        metadata=metadata,
    )
    digest = digest_parts(file_listing_digest(paths, plan.root), ids, labels.tolist(), assignment.tolist(), class_names)
    note = f"split from {split_path or 'the ' + repr(roles.split) + ' column'}"
    return Dataset(name, spec, task, tuple(class_names), splits, digest, description=f"{description} ({note})")


def read_manifest(path: Path) -> Table:
    """A CSV manifest as a :class:`Table` (rows named by their line)."""
    header, rows = read_csv_rows(path)
    if not rows:
        raise DatasetError(f"{path}: the manifest has a header but no rows.")
    return Table(str(path), header, rows, [f"line {i + 2}" for i in range(len(rows))])


def load_manifest(
    manifest: Path,
    spec: str,
    task: TaskType | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    classes: list[str] | None = None,
    order: tuple[str, ...] | None = None,
    path: str | None = None,
    label: tuple[str, ...] | None = None,
    group: str | None = None,
    split: str | None = None,
    id: str | None = None,  # noqa: A002 - the option's name
    split_file: str | None = None,
) -> Dataset:
    """Load a CSV manifest; ``classes`` (optional) declares the allowed labels and their order, ``order`` the
    grades of an ordinal task, ``path``/``label``/``group``/``split``/``id`` the columns of those roles."""
    table = read_manifest(manifest)
    columns = Columns(path, label, group, split, id)
    grouping = group if group not in (None, "group") else ""
    plan = SplitPlan(manifest, manifest.parent, seed, fractions, split_file, grouping or "")
    name = manifest.parent.name if manifest.stem == "manifest" else manifest.stem
    return dataset_from_table(table, spec, columns, plan, name, f"CSV manifest {manifest}", task, classes, order)


def _first_dupes(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    dupes = []
    for i in ids:
        if i in seen:
            dupes.append(i)
            if len(dupes) == 3:
                break
        seen.add(i)
    return dupes


SOURCE = DatasetSource(
    name="csv",
    loader=load_manifest,
    takes_path=True,
    example="csv:data/manifest.csv",
    description="a CSV manifest: path, label (or 0/1 columns), optional split, group (patient), id; other columns: metadata",
    options=(TASK, SEED, ORDER, *COLUMN_OPTIONS, SPLIT_FILE),
    suffixes=(".csv",),
)

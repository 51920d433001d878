"""CSV manifests: ``csv:<manifest.csv>``.

Columns: ``path`` (relative to the manifest's folder), then either ``label`` (one class name per row) or several
0/1 label columns (multi-label); optional ``split`` (train/val/test), ``group`` (patient or lesion id) and ``id``.
Without a ``split`` column, fmprobe draws a seeded split grouped by ``group`` and saves it beside the manifest.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fmprobe.datasets.base import Dataset, digest_parts, file_listing_digest, not_found
from fmprobe.datasets.sources import SEED, TASK, DatasetSource, OptionSpec
from fmprobe.datasets.splits import (
    DEFAULT_FRACTIONS,
    assign_splits,
    group_conflict,
    load_or_create_split,
    refuse_duplicates,
    resolved,
    split_file_for,
)
from fmprobe.errors import DatasetError
from fmprobe.registry import closest
from fmprobe.tasks import GROUP, SPLIT_NAMES, TaskType

RESERVED = ("path", "split", "group", "id")


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


def _parse_multilabel(path: Path, rows: list[dict[str, str]], label_columns: list[str]) -> np.ndarray:
    values = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}
    labels = np.zeros((len(rows), len(label_columns)), dtype=np.int64)
    for r, row in enumerate(rows):
        for c, column in enumerate(label_columns):
            value = row[column]
            if value.lower() in MISSING_LABELS:
                raise DatasetError(
                    f"{path}, line {r + 2}: missing value ({value!r}) in label column {column!r}. Give 0 or 1, or "
                    "drop the row."
                )
            if value not in values:
                raise DatasetError(
                    f"{path}, line {r + 2}: label column {column!r} has value {value!r}; multi-label columns must "
                    f"be 0 or 1. Columns other than {', '.join(RESERVED)} are read as 0/1 labels: rename the "
                    "column if it is not a label."
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
    path: Path, rows: list[dict[str, str]], header: list[str], classes: list[str] | None,
    task: TaskType | None, order: tuple[str, ...] | None,
) -> tuple[np.ndarray, list[str]]:  # fmt: skip
    """A ``label`` column: one class name per row, in the declared ``classes`` order or :func:`ordered_classes`."""
    unknown = [h for h in header if h not in RESERVED + ("label",)]
    if unknown:
        raise DatasetError(
            f"{path}: unknown columns {unknown}. With a 'label' column the allowed columns are "
            f"{', '.join(RESERVED + ('label',))}; remove the others, or drop 'label' and use 0/1 columns "
            "for a multi-label task."
        )
    for line, row in enumerate(rows, start=2):
        if row["label"].lower() in MISSING_LABELS:
            raise DatasetError(
                f"{path}, line {line}: missing label ({row['label']!r}) for {row['path']!r}; "
                f"{', '.join(repr(m) for m in MISSING_LABELS)} mean 'no label'. Give the label or drop the row."
            )
    given = [normalise_label(row["label"]) for row in rows]
    values = set(given)
    if classes is not None:
        unknown_labels = sorted(values - set(classes))
        if unknown_labels:
            raise DatasetError(f"{path}: unknown labels {unknown_labels[:5]}; the declared classes are {classes}.")
        class_names = list(classes)
    else:
        class_names = ordered_classes(str(path), values, task, order)
    if len(class_names) < 2:
        raise DatasetError(f"{path}: only one class ({class_names}); a classifier needs at least two.")
    index = {name: i for i, name in enumerate(class_names)}
    return np.asarray([index[label] for label in given], dtype=np.int64), class_names


def _labels(
    path: Path, rows: list[dict[str, str]], header: list[str], classes: list[str] | None, task: TaskType | None,
    order: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, list[str], TaskType]:  # fmt: skip
    """(labels, class names, task type) from either a ``label`` column or 0/1 columns (multi-label)."""
    inferred: TaskType
    if "label" in header:
        labels, class_names = _single_label(path, rows, header, classes, task, order)
        inferred = "binary" if len(class_names) == 2 else "multiclass"
    else:
        label_columns = [h for h in header if h not in RESERVED]
        if not label_columns:
            raise DatasetError(f"{path}: no label columns; add a 'label' column or 0/1 columns, one per label.")
        labels, class_names, inferred = _parse_multilabel(path, rows, label_columns), label_columns, "multilabel"
    if task is not None and task != inferred and not (task == "ordinal" and inferred in ("binary", "multiclass")):
        raise DatasetError(f"{path}: the labels describe a {inferred} task; task={task} does not fit them.")
    return labels, class_names, task or inferred


def _sample_ids(path: Path, rows: list[dict[str, str]]) -> list[str]:
    """The ``id`` column, else the ``path``: unique, one per row."""
    for line, row in enumerate(rows, start=2):
        if not row["path"]:
            raise DatasetError(f"{path}, line {line}: empty 'path'.")
    ids = [row.get("id") or row["path"] for row in rows]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:3] if len(ids) < 5000 else _first_dupes(ids)
        raise DatasetError(f"{path}: duplicate sample ids {dupes}; each image may appear once.")
    return ids


def _assignment(
    path: Path, rows: list[dict[str, str]], header: list[str], ids: list[str], labels: np.ndarray,
    groups: list[str] | None, seed: int, fractions: tuple[float, float, float],
) -> tuple[np.ndarray, str]:  # fmt: skip
    """Each row's split (0 train, 1 val, 2 test) and where it came from: the ``split`` column, else the saved
    (or newly drawn) split file beside the manifest."""
    if "split" in header:
        bad = sorted({row["split"] for row in rows} - set(SPLIT_NAMES))
        if bad:
            raise DatasetError(f"{path}: unknown split names {bad}; use train, val or test.")
        return np.asarray([SPLIT_NAMES.index(row["split"]) for row in rows]), "manifest"  # type: ignore[arg-type]
    split_path = split_file_for(path, seed, fractions)
    return load_or_create_split(split_path, ids, labels, groups, fractions, seed), str(split_path)


def load_manifest(
    path: Path,
    spec: str,
    task: TaskType | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    classes: list[str] | None = None,
    order: tuple[str, ...] | None = None,
) -> Dataset:
    """Load a CSV manifest; ``classes`` (optional) declares the allowed labels and their order, ``order`` the
    grades of an ordinal task."""
    header, rows = read_csv_rows(path)
    if "path" not in header:
        raise DatasetError(f"{path}: no 'path' column (found {header}). The first column should be 'path'.")
    if not rows:
        raise DatasetError(f"{path}: the manifest has a header but no rows.")
    root = path.parent
    labels, class_names, task = _labels(path, rows, header, classes, task, order)
    ids = _sample_ids(path, rows)
    paths = [resolved(root / row["path"]) for row in rows]
    groups = [row["group"] for row in rows] if "group" in header else None
    assignment, split_note = _assignment(path, rows, header, ids, labels, groups, seed, fractions)
    if groups is not None and (conflict := group_conflict(groups, assignment)):
        at, first, second = conflict
        raise DatasetError(
            f"{path}: group {groups[at]!r} appears in both {first} and {second}; one patient "
            "in two splits leaks information. Fix the 'split' column, or remove it to let fmprobe split by group."
        )
    refuse_duplicates(paths, assignment, lambda i: f"line {i + 2} ({rows[i]['path']!r})", str(path))
    splits = assign_splits(
        ids, labels, paths, assignment, lambda name: f"{path}: the {name} split is empty; every split needs samples.",
        metadata={GROUP: groups} if groups is not None else None,
    )
    digest = digest_parts(file_listing_digest(paths, root), ids, labels.tolist(), assignment.tolist(), class_names)
    return Dataset(
        name=path.parent.name if path.stem == "manifest" else path.stem,
        spec=spec,
        task=task,
        class_names=tuple(class_names),
        splits=splits,
        content_digest=digest,
        description=f"CSV manifest {path} (split from {split_note})",
    )


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
    description="a CSV manifest: path, label (or 0/1 columns), optional split, group (patient) and id",
    options=(TASK, SEED, ORDER),
    suffixes=(".csv",),
)

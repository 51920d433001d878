"""Hugging Face datasets: ``hf:ORG/NAME`` from the local datasets cache, or ``hf:<dir>`` saved with
``save_to_disk``; needs the ``datasets`` package (``pip install datasets``).

Offline by design: ``HF_DATASETS_OFFLINE=1`` is set unless the user set it, so a dataset never downloaded
fails with the command that downloads it instead of a network wait. The image column is the one ``Image``
feature (or ``?image=``), the label the ``label`` column or the one ``ClassLabel`` (or ``?label=``); every other
scalar column is kept as sample metadata. Hugging Face's split names map to fmprobe's (``validation`` is val);
missing val/test splits are carved from train (seeded, saved beside a saved folder, else in the user cache).
Images are decoded from their stored bytes exactly as image files are (EXIF orientation, bit-depth checks).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fmprobe._io import slug, user_cache_dir
from fmprobe.datasets.base import FILE_IMAGE_CONVERSION, Dataset, Split, decode_image_bytes, digest_parts
from fmprobe.datasets.columns import metadata_columns, say_once, suggest_group_column
from fmprobe.datasets.imagefolder import SPLIT_DIRS
from fmprobe.datasets.manifest import ORDER, normalise_label, ordered_classes
from fmprobe.datasets.sources import SEED, SPLIT_FILE, TASK, DatasetSource, OptionSpec
from fmprobe.datasets.splits import DEFAULT_FRACTIONS, carve_from_train, chosen_split_file, group_conflict
from fmprobe.errors import DatasetError, ImageError
from fmprobe.tasks import GROUP, SPLIT_NAMES, TaskType

log = logging.getLogger(__name__)
INSTALL = "pip install datasets"


def datasets_module(where: str = "hf: datasets") -> Any:
    """The ``datasets`` package, offline unless the user chose otherwise; a named error when it is missing."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise DatasetError(
            f"{where} needs the Hugging Face `datasets` package: {INSTALL}. Without it, save the images as an "
            "imagefolder tree (metadata.csv with file_name and label) and use imagefolder:DIR."
        ) from None
    if not hasattr(datasets, "load_dataset"):  # a folder named datasets/ on the path (the current one) shadows it
        where_found = list(getattr(datasets, "__path__", [])) or getattr(datasets, "__file__", "?")
        raise DatasetError(
            f"{where} needs the Hugging Face `datasets` package, but `import datasets` finds {where_found}, which is "
            f"not it (a folder named datasets on the Python path?). Run from another folder, or {INSTALL}."
        )
    return datasets


def _open(argument: str, config: str | None) -> dict[str, Any]:
    """The named splits of ``argument``: a ``save_to_disk`` folder, else a dataset id in the local cache."""
    datasets = datasets_module(f"hf:{argument}")
    try:
        if Path(argument).expanduser().is_dir():
            loaded = datasets.load_from_disk(str(Path(argument).expanduser()))
        else:
            loaded = datasets.load_dataset(argument, config)
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        raise DatasetError(
            f"hf:{argument}: not found in the local Hugging Face datasets cache ({type(err).__name__}: {err}). fmprobe "
            f"reads it offline: download it once with `python -c \"import datasets; datasets.load_dataset('{argument}'"
            + (f", '{config}'" if config else "") + ")\"` (HF_DATASETS_OFFLINE=0), or give a folder saved with save_to_disk."
        ) from None
    return {"train": loaded} if isinstance(loaded, datasets.Dataset) else dict(loaded)


def _splits(argument: str, loaded: dict[str, Any]) -> dict[str, Any]:
    """fmprobe split name -> Hugging Face split; other splits are left out, said once."""
    named = {SPLIT_DIRS[k.lower()]: v for k, v in loaded.items() if k.lower() in SPLIT_DIRS}
    other = sorted(k for k in loaded if k.lower() not in SPLIT_DIRS)
    if len(named) != len([k for k in loaded if k.lower() in SPLIT_DIRS]) or "train" not in named:
        raise DatasetError(f"hf:{argument}: splits {sorted(loaded)}; fmprobe needs one train split (and at most one "
                           "validation and one test split).")  # fmt: skip
    if other:
        say_once(log.warning, f"hf:{argument}: split(s) {other} are not train/validation/test and are left out.")
    return named


def _feature_column(argument: str, features: dict[str, Any], given: str | None, kind: str, option: str, default: str) -> str:
    """The column the spec names, else ``default`` if present, else the only feature of type ``kind``."""
    if given is not None:
        if given not in features:
            raise DatasetError(f"hf:{argument}: {option}={given!r} is not a column; columns: {list(features)}.")
        return given
    typed = [name for name, f in features.items() if type(f).__name__ == kind]
    if default in features and (default in typed or kind == "ClassLabel"):
        return default
    if len(typed) == 1:
        return typed[0]
    raise DatasetError(f"hf:{argument}: {len(typed)} {kind} columns ({typed}); name the {default} column with "
                       f"?{option}=COLUMN (columns: {list(features)}).")  # fmt: skip


@dataclass(frozen=True)
class HFSource:
    """Images of one split, read from a Hugging Face dataset's stored bytes (its image column undecoded)."""

    table: Any
    column: str
    rows: tuple[int, ...]
    name: str

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, index: int) -> Image.Image:
        cell = self.table[self.rows[index]][self.column]
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if data is None and isinstance(cell, dict) and cell.get("path"):
            try:
                data = Path(cell["path"]).read_bytes()
            except OSError as err:
                raise ImageError(f"{self.describe(index)}: cannot read {cell['path']} ({err}).") from None
        if data is None:
            raise ImageError(f"{self.describe(index)}: no image stored in column {self.column!r}.")
        return decode_image_bytes(data, self.describe(index))

    def describe(self, index: int) -> str:
        return f"{self.name}[{self.rows[index]}]"

    @property
    def conversion(self) -> str:
        return FILE_IMAGE_CONVERSION


def _labels(argument: str, parts: dict[str, Any], column: str, task: TaskType | None, order: tuple[str, ...] | None) -> tuple[dict[str, list[str]], list[str]]:
    """Each split's labels as class names, and the class names in label order (a ClassLabel's own order)."""
    feature = parts["train"].features[column]
    names: list[str] | None = list(feature.names) if type(feature).__name__ == "ClassLabel" else None
    given = {}
    for split, part in parts.items():
        values = list(part[column])
        if any(v is None or (names is not None and v < 0) for v in values):
            raise DatasetError(f"hf:{argument}: the {split} split has rows without a label in {column!r}; fmprobe "
                               "needs every row labelled (filter them out and save_to_disk).")  # fmt: skip
        given[split] = [names[v] if names is not None else normalise_label(str(v)) for v in values]
    if names is not None and (order is None or task != "ordinal"):
        if order is not None:
            raise DatasetError(f"hf:{argument}: order= declares the grades of an ordinal task; add task=ordinal or drop order=.")
        return given, names
    return given, ordered_classes(f"hf:{argument}", {v for g in given.values() for v in g}, task, order)


def _scalar_rows(parts: dict[str, Any]) -> tuple[list[str], list[dict[str, str]]]:
    """The scalar columns (values, class labels) of every split, as text rows in split order (None: ``''``)."""
    features = parts["train"].features
    columns = [c for c, f in features.items() if type(f).__name__ in ("Value", "ClassLabel")]
    rows: list[dict[str, str]] = []
    names = {c: f.names for c, f in features.items() if type(f).__name__ == "ClassLabel"}  # class labels as names
    for part in parts.values():
        values = [list(part[c]) if c in part.features else [None] * len(part) for c in columns]
        values = [[names[c][v] if c in names and v is not None and v >= 0 else v for v in vs] for c, vs in zip(columns, values, strict=True)]
        rows += [{c: "" if v is None else str(v) for c, v in zip(columns, row, strict=True)} for row in zip(*values)] if columns else [{}] * len(part)
    return columns, rows


def _assignment(argument: str, parts: dict[str, Any], ids: list[str], labels: np.ndarray, groups: list[str] | None,
                seed: int, split_file: str | None, group: str | None) -> np.ndarray:  # fmt: skip
    """The given splits, with missing val/test carved from train and saved beside a saved folder (else the cache)."""
    assignment = np.concatenate([np.full(len(p), SPLIT_NAMES.index(s), np.int8) for s, p in parts.items()])  # type: ignore[arg-type]
    if groups is not None and (conflict := group_conflict(groups, assignment)):
        raise DatasetError(f"hf:{argument}: group {groups[conflict[0]]!r} is in both {conflict[1]} and {conflict[2]}.")
    local = Path(argument).expanduser()
    if local.is_dir():
        root = local
    else:
        root = user_cache_dir() / "splits"
        root.mkdir(parents=True, exist_ok=True)
    data_path = root / f"hf_{slug(argument)}.csv"
    carved = carve_from_train(
        assignment, ids, labels, groups,
        lambda carve: chosen_split_file(data_path, seed, carve, split_file, root, group or ""), seed, DEFAULT_FRACTIONS,
    )  # fmt: skip
    if split_file is not None and not carved:
        raise DatasetError(f"hf:{argument}: split_file={split_file} but train, validation and test are all given.")
    return assignment


def _groups(argument: str, columns: list[str], rows: list[dict[str, str]], group: str | None, used: list[str]) -> list[str] | None:
    """The group column's values (checked to be a scalar column), or None after the once-said suggestion."""
    if group is None:
        suggest_group_column(f"hf:{argument}", columns, rows, used)
        return None
    if group not in columns:
        raise DatasetError(f"hf:{argument}: group={group!r} is not a scalar column; columns: {columns}.")
    return [row[group] for row in rows]


def _build_splits(
    argument: str, parts: dict[str, Any], image_column: str, ids: list[str], labels: np.ndarray,
    assignment: np.ndarray, metadata: dict[str, tuple[str, ...]],
) -> dict[str, Split]:  # fmt: skip
    """fmprobe's splits; each reads its images from the one Hugging Face split its rows came from."""
    image_feature = datasets_module().Image(decode=False)  # the stored bytes, decoded by fmprobe like files
    owner = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts.values())])
    offsets = np.cumsum([0] + [len(p) for p in parts.values()])
    splits = {}
    for name in SPLIT_NAMES:
        members = np.flatnonzero(assignment == SPLIT_NAMES.index(name))
        if len(members) == 0:
            raise DatasetError(f"hf:{argument}: the {name} split is empty; the train split is too small to carve it from.")
        (k,) = set(owner[members].tolist())  # carving stays inside train: one Hugging Face split per split
        hf_split = list(parts)[k]
        table = parts[hf_split].cast_column(image_column, image_feature)
        source = HFSource(table, image_column, tuple(int(i - offsets[k]) for i in members), f"hf:{argument}/{hf_split}")
        split_metadata = {key: tuple(values[i] for i in members) for key, values in metadata.items()}
        splits[name] = Split(name, tuple(ids[i] for i in members), labels[members], source, split_metadata)
    return splits


def load_hf(
    argument: str, spec: str, task: TaskType | None = None, seed: int = 0, order: tuple[str, ...] | None = None,
    config: str | None = None, image: str | None = None, label: str | None = None, group: str | None = None,
    split_file: str | None = None,
) -> Dataset:  # fmt: skip
    """Load ``hf:ORG/NAME`` (local cache) or ``hf:<save_to_disk folder>``."""
    if not argument:
        raise DatasetError(f"dataset spec {spec!r}: give the dataset after 'hf:', e.g. hf:ORG/NAME or hf:<saved folder>.")
    parts = _splits(argument, _open(argument, config))
    features = parts["train"].features
    image_column = _feature_column(argument, features, image, "Image", "image", "image")
    label_column = _feature_column(argument, features, label, "ClassLabel", "label", "label")
    given, class_names = _labels(argument, parts, label_column, task, order)
    index = {name: i for i, name in enumerate(class_names)}
    ids = [f"{s}/{i}" for s, p in parts.items() for i in range(len(p))]
    labels = np.asarray([index[v] for s in parts for v in given[s]], dtype=np.int64)
    columns, rows = _scalar_rows(parts)
    used = [image_column, label_column] + ([group] if group else [])
    groups = _groups(argument, columns, rows, group, used)
    metadata = metadata_columns(f"hf:{argument}", columns, rows, used)
    if groups is not None:
        metadata = {GROUP: tuple(groups), **metadata}
    assignment = _assignment(argument, parts, ids, labels, groups, seed, split_file, group)
    splits = _build_splits(argument, parts, image_column, ids, labels, assignment, metadata)
    fingerprints = {s: getattr(p, "_fingerprint", "") for s, p in parts.items()}
    digest = digest_parts("hf", argument, config, fingerprints, ids, labels.tolist(), assignment.tolist(), class_names)
    inferred: TaskType = "binary" if len(class_names) == 2 else "multiclass"
    name = Path(argument).name if Path(argument).expanduser().is_dir() else argument.rsplit("/", 1)[-1]
    return Dataset(name, spec, task or inferred, tuple(class_names), splits, digest, description=f"Hugging Face dataset {argument}")


SOURCE = DatasetSource(
    name="hf",
    loader=load_hf,
    takes_path=False,
    example="hf:ORG/NAME",
    description="a Hugging Face dataset from the local cache (offline) or a save_to_disk folder; needs `pip install datasets`",
    options=(
        TASK, SEED, ORDER,
        OptionSpec("config", None, "the dataset's configuration (subset) name, when it has several"),
        OptionSpec("image", None, "the image column (default: the one Image feature)"),
        OptionSpec("label", None, "the label column (default: label, else the one ClassLabel feature)"),
        OptionSpec("group", None, "the patient/lesion column a carved split keeps together"),
        SPLIT_FILE,
    ),
)  # fmt: skip

"""The result-row schema and the one way to build, read, write and merge result tables.

A study writes a tidy long table: one row per (cell, metric). A *cell* is one fitted-and-evaluated
configuration (dataset, backbone, weights, readout, resolution, probe, train fraction, repeat, seed, cache
fingerprint), a :class:`CellInfo`; :func:`cell_id` names it with a stable hash so reruns can skip finished cells
and tables from several machines merge by concatenation. :func:`rows_for_cell` turns a cell's metric values into
its rows, for probing and fine-tuning alike, and :func:`write_cell` saves a cell's predictions and rows.

On disk a results directory holds ``results.parquet`` (the source of truth), ``results.csv`` (the same rows,
for people and spreadsheets), ``pending/`` (one small part file per appended cell, not yet compacted),
``predictions/<cell_id>.npz`` (per-sample test scores, for paired tests) and ``.lock``. Appending a cell writes
one part file, so writing N cells costs N small writes instead of N rewrites of a growing table;
:func:`compact_results` folds the parts into the two tables once (``fmprobe probe`` does it when it finishes).
Readers see the compacted table plus any pending parts, in append order, the newest row per (cell_id, metric, subgroup)
winning, so a crash between an append and the compaction loses nothing. Every file is replaced atomically and
appends and compactions serialise on the lock, so two studies writing into one directory never lose rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union

import numpy as np
import pandas as pd
import pyarrow as pa

from fmprobe._io import atomic_write, exclusive, prove_writable
from fmprobe.errors import ResultsError
from fmprobe.tasks import TASK_TYPES

PathLike = Union[str, "os.PathLike[str]"]

CSV_NAME = "results.csv"
PARQUET_NAME = "results.parquet"
PENDING_DIR = "pending"
PREDICTIONS_DIR = "predictions"
LOCK_NAME = ".lock"
DEDUPE_KEY = ["cell_id", "metric", "subgroup"]
OVERALL = ""  # the ``subgroup`` of a row computed over the whole test set


@dataclass(frozen=True)
class ResultRow:
    """One (cell, metric) row; field order is the column order of every results file."""

    dataset: str
    task: str
    backbone: str
    weights: str
    readout: str
    resolution: int
    probe: str
    params: str  # JSON of the hyper-parameters chosen on validation data
    train_fraction: float
    repeat: int
    seed: int
    metric: str
    value: float  # NaN when the metric is undefined; missing_reason then says why
    ci_low: float
    ci_high: float
    missing_reason: str
    is_primary: bool
    n_train: int
    n_test: int
    val_score: float  # primary metric on validation data: the only score used to choose configurations
    fingerprint: str
    cell_id: str
    predictions: str  # path of the per-sample predictions file, relative to the results directory
    # Columns added after the first release carry a default, which older tables are read with.
    imagenet_baseline: bool = False  # the backbone entry is registered as an ImageNet baseline (the report's default)
    shots: int = 0  # labelled training images per class (few-shot cells); 0: the cell used train_fraction
    n_val: int = -1  # validation samples the configuration was chosen on (-1: not recorded, older tables)
    detail: str = ""  # what the value is computed over when not the plain whole test set (e.g. "13 of 14 labels")
    flags: str = ""  # warnings about the cell a reader must see (e.g. constant test predictions); "" when none
    test_set: str = ""  # digest of the sorted test sample ids: rows with different digests were scored on other samples
    val_subsample: str = ""  # "proportional": chosen on a subsample of validation in proportion; "": on all of it
    # The slice of the test set a row is computed on: "" the whole test set (OVERALL); "ATTR=VALUE" one subgroup
    # (n_test is its size); "ATTR" a summary over that attribute's groups (worst group, largest gap).
    subgroup: str = OVERALL
    p_value: float = math.nan  # a row that is a test (a subgroup gap): its p-value, Holm-adjusted where the detail says so


COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ResultRow))
_KINDS: dict[str, str] = {f.name: str(f.type) for f in dataclasses.fields(ResultRow)}  # "str", "int", ...
ADDED_COLUMNS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(ResultRow) if f.default is not dataclasses.MISSING
}
STR_COLUMNS = tuple(c for c in COLUMNS if _KINDS[c] == "str")
INT_COLUMNS = tuple(c for c in COLUMNS if _KINDS[c] == "int")
FLOAT_COLUMNS = tuple(c for c in COLUMNS if _KINDS[c] == "float")
BOOL_COLUMNS = tuple(c for c in COLUMNS if _KINDS[c] == "bool")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------------------------- schema


def cell_id(
    *,
    dataset: str,
    backbone: str,
    weights: str,
    readout: str,
    resolution: int,
    probe: str,
    train_fraction: float,
    repeat: int,
    seed: int,
    fingerprint: str,
    shots: int = 0,
    val_subsample: str = "",
) -> str:
    """Stable 16-hex-digit name of a cell (keyword-only, so a reordered call cannot silently change it).

    Reruns skip cells whose id is already done, and tables from several machines merge by it. Numbers are
    normalised (``224`` == ``224.0``, ``0.1`` == ``np.float32(0.1)`` rounded to 12 digits) so the same cell hashes
    the same on every machine and Python version. ``shots`` and ``val_subsample`` enter the hash only when set, so
    the cells of tables written before they existed keep their ids (and a cell chosen on all of validation, as
    every earlier version did, is never taken for one chosen on a proportional subsample).

    Parameters
    ----------
    dataset, backbone, weights, readout, probe : str
        The cell's dataset, backbone (as run, ``:random`` included), weights label, readout and probe.
    resolution : int
        Input size in pixels.
    train_fraction : float
        Fraction of the training set used, in (0, 1].
    repeat, seed : int
        The repeat index and its seed.
    fingerprint : str
        The feature cache's key.
    shots : int, optional
        Labelled training images per class (0: ``train_fraction`` was used).
    val_subsample : str, optional
        How validation was subsampled for the choice (``"proportional"``; ``""``: all of it).

    Returns
    -------
    str
        16 hex digits.

    Examples
    --------
    >>> from fmprobe.results import cell_id
    >>> cell_id(dataset="demo", backbone="efficientnet_lite0_imagenet", weights="imagenet", readout="pooled",
    ...         resolution=224, probe="logistic", train_fraction=1.0, repeat=0, seed=0, fingerprint="3f2a9c")
    '91f9045315f822ab'
    """
    key = {
        "dataset": str(dataset),
        "backbone": str(backbone),
        "weights": str(weights),
        "readout": str(readout),
        "resolution": int(resolution),
        "probe": str(probe),
        "train_fraction": round(float(train_fraction), 12),
        "repeat": int(repeat),
        "seed": int(seed),
        "fingerprint": str(fingerprint),
        **({"shots": int(shots)} if shots else {}),
        **({"val_subsample": str(val_subsample)} if val_subsample else {}),
    }
    blob = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CellInfo:
    """What identifies one cell (everything :func:`cell_id` hashes) plus its task.

    ``backbone`` is the name as run, ``:random`` (``:random:SEED``) included: the id keeps it, while the rows show
    the base name and say ``weights="random"`` (``"random:SEED"``).
    """

    dataset: str
    task: str
    backbone: str
    weights: str
    readout: str
    resolution: int
    probe: str
    train_fraction: float
    repeat: int
    seed: int
    fingerprint: str
    imagenet_baseline: bool = False  # a fact about the backbone entry, not part of the cell's identity
    shots: int = 0  # labelled training images per class; 0: ``train_fraction`` of the training set
    val_subsample: str = ""  # how validation was subsampled for the choice ("proportional"); "": all of it

    @property
    def cell_id(self) -> str:
        return cell_id(**{k: getattr(self, k) for k in CELL_KEYS})


CELL_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(CellInfo) if f.name not in ("task", "imagenet_baseline")
)


class MetricResult(Protocol):
    """A metric's value or the reason it is missing, with its CI (``fmprobe.metrics.MetricValue`` is one)."""

    value: float | None
    reason: str | None
    ci_low: float | None
    ci_high: float | None


def _nan_if_none(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _params_json(params: Mapping[str, Any]) -> str:
    """Chosen hyper-parameters as sorted JSON; numpy scalars as numbers, anything else unknown as its str."""
    return json.dumps(dict(params), sort_keys=True, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))


def _base_name(cell: CellInfo) -> str:
    """The name a row shows: a random control's run name (``NAME:random``, ``NAME:random:SEED``, as
    :func:`fmprobe.backbones.parse_backbone` reads it) without the modifier, which the weights label carries."""
    head, sep, seed = cell.backbone.rpartition(":random")
    return head if sep and (seed == "" or (seed[:1] == ":" and seed[1:].isdigit())) else cell.backbone


def rows_for_cell(
    cell: CellInfo,
    metrics: Mapping[str, MetricResult],
    *,
    primary: str,
    params: Mapping[str, Any],
    n_train: int,
    n_test: int,
    val_score: float | None,
    predictions: str = "",
    n_val: int = -1,
    flags: str = "",
    test_set: str = "",
    subgroup: str = OVERALL,
) -> list[ResultRow]:
    """One :class:`ResultRow` per metric of a finished cell, for probing and fine-tuning alike.

    A metric's ``detail`` (when it has one) goes into its row.

    Parameters
    ----------
    cell : CellInfo
        What identifies the cell.
    metrics : Mapping of str to MetricResult
        Metric name -> value (or the reason it is missing) with its CI.
    primary : str
        The metric the study ranks by (its row gets ``is_primary``).
    params : Mapping
        The hyper-parameters chosen on validation (probing) or the recipe (fine-tuning).
    n_train, n_test : int
        Training and test samples used.
    val_score : float or None
        The selection score on validation (None: NaN).
    predictions : str, optional
        The path :func:`save_predictions` returned.
    n_val : int, optional
        The validation samples the choice saw (-1: not recorded).
    flags : str, optional
        Warnings a reader must see (``""``: none).
    test_set : str, optional
        The :func:`test_set_digest` of the scored samples.
    subgroup : str, optional
        The slice of the test set the metrics are on (``""``: all of it; ``n_test`` is the slice's size). A
        metric's ``p_value`` (when it has one) goes into its row too.

    Returns
    -------
    list of ResultRow
        One row per metric, in ``metrics`` order.

    Examples
    --------
    >>> rows = rows_for_cell(cell, {"auroc": value}, primary="auroc", params={"C": 1.0},
    ...                      n_train=420, n_test=90, val_score=0.81)  # doctest: +SKIP
    """
    shared = {
        **{k: getattr(cell, k) for k in CELL_KEYS},
        "task": cell.task,
        "imagenet_baseline": bool(cell.imagenet_baseline),
        "backbone": _base_name(cell),
        "resolution": int(cell.resolution),
        "train_fraction": float(cell.train_fraction),
        "params": _params_json(params),
        "n_train": int(n_train),
        "n_test": int(n_test),
        "val_score": _nan_if_none(val_score),
        "cell_id": cell.cell_id,
        "predictions": predictions,
        "shots": int(cell.shots),
        "n_val": int(n_val),
        "flags": flags,
        "test_set": test_set,
    }
    return [
        ResultRow(
            metric=name,
            value=_nan_if_none(m.value),
            ci_low=_nan_if_none(m.ci_low),
            ci_high=_nan_if_none(m.ci_high),
            missing_reason=m.reason or "",
            is_primary=name == primary,
            detail=getattr(m, "detail", "") or "",
            subgroup=subgroup,
            p_value=_nan_if_none(getattr(m, "p_value", None)),
            **shared,
        )
        for name, m in metrics.items()
    ]


def write_cell(
    results_dir: PathLike,
    cell: CellInfo,
    metrics: Mapping[str, MetricResult],
    *,
    ids: Sequence[Any] | np.ndarray,
    y_true: np.ndarray,
    y_score: np.ndarray,
    meta: Mapping[str, Any],
    primary: str,
    params: Mapping[str, Any],
    n_train: int,
    val_score: float | None,
    n_val: int = -1,
    flags: str = "",
    subgroups: Sequence[tuple[str, int, Mapping[str, MetricResult]]] = (),
) -> list[ResultRow]:
    """Record a finished cell: its test predictions first, then its rows as one pending part.

    The order matters: a crash in between leaves a cell that :func:`done_cells` does not count and a rerun redoes.

    Parameters
    ----------
    results_dir : str or path
        The results directory (created if needed).
    cell : CellInfo
        What identifies the cell.
    metrics : Mapping of str to MetricResult
        Metric name -> value with its CI.
    ids, y_true, y_score, meta
        The test predictions, as :func:`save_predictions` takes them.
    primary, params, n_train, val_score, n_val, flags
        As :func:`rows_for_cell` takes them (``n_test`` and ``test_set`` come from the predictions).
    subgroups : sequence of (str, int, Mapping), optional
        (subgroup, its n, its metrics) per slice of the test set, written in the same part as the whole-test-set rows.

    Returns
    -------
    list of ResultRow
        The rows appended.

    Raises
    ------
    fmprobe.errors.ResultsError
        The predictions or rows are malformed, or ``results_dir`` cannot be written.

    Examples
    --------
    >>> write_cell("runs/results", cell, metrics, ids=ids, y_true=y, y_score=p, meta={"task": "binary"},
    ...            primary="auroc", params={}, n_train=420, val_score=0.8)  # doctest: +SKIP
    """
    path = save_predictions(results_dir, cell.cell_id, ids, y_true, y_score, meta)
    shared = dict(primary=primary, params=params, val_score=val_score, predictions=path, n_val=n_val, flags=flags,
                  n_train=n_train, test_set=test_set_digest(ids))  # fmt: skip
    rows = rows_for_cell(cell, metrics, n_test=len(y_true), **shared)  # type: ignore[arg-type]
    for subgroup, n, values in subgroups:
        rows += rows_for_cell(cell, values, n_test=n, subgroup=subgroup, **shared)  # type: ignore[arg-type]
    append_rows(results_dir, rows)
    return rows


DEGENERATE = "degenerate:"  # a flag that starts so: the cell's scores carry no information (never best, never recommended)


def disqualifying(flags: str) -> bool:
    """Whether a row's ``flags`` say its scores carry no information at all (constant across samples).

    Such a row is never best and never recommended. Other flags (e.g. every argmax prediction one class, while the
    scores still rank the samples) are warnings: the row stays comparable on threshold-free metrics such as ROC-AUC.

    Parameters
    ----------
    flags : str
        A row's ``flags`` (``;``-separated); anything not a string (a missing value) is not disqualifying.

    Returns
    -------
    bool
        True when one flag starts with ``degenerate:``.

    Examples
    --------
    >>> from fmprobe.results import disqualifying
    >>> disqualifying("degenerate: constant scores"), disqualifying("one-class argmax")
    (True, False)
    """
    return isinstance(flags, str) and any(part.strip().startswith(DEGENERATE) for part in flags.split(";"))


def overall(df: pd.DataFrame) -> pd.DataFrame:
    """The rows computed over the whole test set (``subgroup == ""``): what rankings, tables and recommendations read.

    Subgroup rows share their cell's ``cell_id`` and ``metric``, so every reader that compares cells starts here.

    Parameters
    ----------
    df : pandas.DataFrame
        A results table (one without a ``subgroup`` column is returned as is).

    Returns
    -------
    pandas.DataFrame
        The whole-test-set rows.

    Examples
    --------
    >>> from fmprobe.results import overall, to_frame
    >>> overall(to_frame([])).empty
    True
    """
    return df[df["subgroup"] == OVERALL] if "subgroup" in df.columns else df


def test_set_digest(ids: Sequence[Any] | np.ndarray) -> str:
    """12 hex digits naming a set of test sample ids (order-free): two rows compare only on equal digests.

    Parameters
    ----------
    ids : sequence or numpy.ndarray
        The scored sample ids (any order; compared as strings).

    Returns
    -------
    str
        12 hex digits.

    Examples
    --------
    >>> from fmprobe.results import test_set_digest
    >>> test_set_digest(["b", "a"]) == test_set_digest(["a", "b"])
    True
    """
    blob = "\0".join(sorted(str(i) for i in ids)).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def printable(text: str) -> str:
    """``text`` as valid UTF-8: a lone surrogate (a file or class name that was not UTF-8, decoded with
    ``surrogateescape``) becomes its backslash escape (``\\xff``), so the row can be written (parquet, CSV and HTML
    take valid text only) and reads back the same on every later run. Valid text is returned unchanged.

    Parameters
    ----------
    text : str
        Any Python string.

    Returns
    -------
    str
        ``text``, encodable as UTF-8.

    Examples
    --------
    >>> from fmprobe.results import printable
    >>> printable("lesion_01.png")
    'lesion_01.png'
    >>> printable(b"scan\\xff.png".decode("utf-8", "surrogateescape"))
    'scan\\\\xff.png'
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate surrogateescape did not make (outside U+DC80..U+DCFF)
            return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _printable_record(record: dict[str, Any]) -> dict[str, Any]:
    return {k: printable(v) if isinstance(v, str) else v for k, v in record.items()}


def to_frame(rows: pd.DataFrame | Iterable[ResultRow | Mapping[str, Any]]) -> pd.DataFrame:
    """Rows (ResultRow objects, mappings or a DataFrame) as a DataFrame in schema column order.

    Text is made :func:`printable`, so any row can be written to parquet and CSV. Nothing is validated here
    (:func:`validate` does that).

    Parameters
    ----------
    rows : pandas.DataFrame or iterable of ResultRow or Mapping
        The rows.

    Returns
    -------
    pandas.DataFrame
        One row per input row; an empty input gives an empty table with the schema's columns.

    Examples
    --------
    >>> from fmprobe.results import COLUMNS, to_frame
    >>> list(to_frame([]).columns) == list(COLUMNS)
    True
    """
    if isinstance(rows, pd.DataFrame):
        df = rows.copy()
        for c in [c for c in df.columns if pd.api.types.is_object_dtype(df[c])]:
            df[c] = df[c].map(lambda v: printable(v) if isinstance(v, str) else v)
    else:
        records = [_printable_record(dataclasses.asdict(r) if isinstance(r, ResultRow) else dict(r)) for r in rows]
        df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=list(COLUMNS))
    if set(df.columns) == set(COLUMNS):
        df = df[list(COLUMNS)]
    return df.reset_index(drop=True)


def with_added_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the columns added after the first release (:data:`ADDED_COLUMNS`) filled with their defaults
    where a table written by an older fmprobe lacks them, so old results keep reading.

    Parameters
    ----------
    df : pandas.DataFrame
        A results table, possibly from an older fmprobe.

    Returns
    -------
    pandas.DataFrame
        ``df`` itself when nothing is missing, else a copy with the added columns in schema order.

    Examples
    --------
    >>> import pandas as pd
    >>> from fmprobe.results import with_added_columns
    >>> with_added_columns(pd.DataFrame({"dataset": ["demo"]}))["shots"].tolist()
    [0]
    """
    absent = {c: v for c, v in ADDED_COLUMNS.items() if c not in df.columns}
    if not absent:
        return df
    filled = df.assign(**absent)
    return filled[[c for c in COLUMNS if c in filled.columns] + [c for c in df.columns if c not in COLUMNS]]


def validate(df: pd.DataFrame) -> pd.DataFrame:
    """Raise ResultsError unless ``df`` follows the schema; return it (older tables with the columns added since
    filled in, see :func:`with_added_columns`).

    Checks column names, column types and the few invariants the report relies on (a missing value always
    carries its reason, probabilities of fractions, known task names).

    Parameters
    ----------
    df : pandas.DataFrame
        A results table.

    Returns
    -------
    pandas.DataFrame
        ``df``, with any columns added since its version filled in.

    Raises
    ------
    fmprobe.errors.ResultsError
        Not a DataFrame, missing or unexpected columns, wrong column types, or broken invariants (the rows named).

    Examples
    --------
    >>> import pandas as pd
    >>> from fmprobe.errors import ResultsError
    >>> from fmprobe.results import validate
    >>> try:
    ...     validate(pd.DataFrame({"dataset": ["demo"]}))
    ... except ResultsError as err:
    ...     print("missing columns" in str(err))
    True
    """
    if not isinstance(df, pd.DataFrame):
        raise ResultsError(f"results must be a pandas DataFrame, got {type(df).__name__}.")
    df = with_added_columns(df)
    missing = [c for c in COLUMNS if c not in df.columns]
    extra = [c for c in df.columns if c not in COLUMNS]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns: {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected columns: {', '.join(map(str, extra))}")
        raise ResultsError(
            f"results table does not follow the schema ({'; '.join(parts)}). "
            f"Expected columns, in order: {', '.join(COLUMNS)}."
        )
    bad = [f"{c} (expected {_KINDS[c]}, got {df[c].dtype})" for c in COLUMNS if not _has_kind(df[c], _KINDS[c])]
    if bad:
        raise ResultsError(
            f"results table has columns of the wrong type: {'; '.join(bad)}. "
            "Build rows with fmprobe.results.ResultRow or read them with read_results()."
        )
    problems: list[str] = []

    def check(mask: pd.Series, what: str) -> None:
        if mask.any():
            idx = list(df.index[mask.to_numpy()][:5])
            problems.append(f"{what} (rows {idx}{' …' if mask.sum() > 5 else ''})")

    check(~df["task"].isin(TASK_TYPES), f"task not one of {', '.join(TASK_TYPES)}")
    frac = df["train_fraction"]
    check(~((frac > 0) & (frac <= 1)), "train_fraction outside (0, 1]")
    no_value = df["value"].isna()
    reason = df["missing_reason"].astype(str).str.len() > 0
    check(no_value & ~reason, "value is NaN but missing_reason is empty (say why the metric is missing)")
    check(~no_value & reason, "value is present but missing_reason is set")
    check(df["cell_id"].astype(str).str.len() == 0, "empty cell_id")
    check(~df["params"].map(_is_json), "params is not a JSON string")
    if problems:
        raise ResultsError("results table breaks the schema: " + "; ".join(problems) + ".")
    return df


def _has_kind(s: pd.Series, kind: str) -> bool:
    if kind == "str":
        if pd.api.types.is_string_dtype(s.dtype) and not s.dtype == object:
            return not s.isna().any()
        return s.dtype == object and all(isinstance(v, str) for v in s)
    if kind == "int":
        return pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)
    if kind == "float":
        return pd.api.types.is_float_dtype(s.dtype) or (
            pd.api.types.is_integer_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)
        )
    return pd.api.types.is_bool_dtype(s.dtype)


def _is_json(text: Any) -> bool:
    try:
        json.loads(text)
    except (TypeError, ValueError):
        return False
    return True


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical dtypes (str, int64, float64, bool) so tables from any source concatenate cleanly."""
    out = df[list(COLUMNS)].copy()
    for c in STR_COLUMNS:
        out[c] = out[c].astype(str)
    for c in INT_COLUMNS:
        out[c] = out[c].astype("int64")
    for c in FLOAT_COLUMNS:
        out[c] = out[c].astype("float64")
    for c in BOOL_COLUMNS:
        out[c] = out[c].astype(bool)
    return out.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- reading


def _read_file(path: Path, name_twin: bool = True) -> pd.DataFrame:
    """One results file, validated and normalised (``name_twin``: a damaged table's message says whether its twin
    is intact)."""
    if path.suffix == ".parquet":
        try:
            df = pd.read_parquet(path)
        except FileNotFoundError:
            raise  # a pending part folded in by a compaction meanwhile: the directory reader retries
        except (ValueError, OSError, pa.ArrowException) as e:  # truncated or damaged (ArrowInvalid is a ValueError)
            raise ResultsError(_damaged(path, e, name_twin)) from None
    elif path.suffix == ".csv":
        na = {c: [""] for c in FLOAT_COLUMNS}  # only floats may be missing; '' stays '' in text columns
        dtypes: dict[str, Any] = {c: str for c in STR_COLUMNS}
        dtypes.update({c: "int64" for c in INT_COLUMNS})
        dtypes.update({c: "float64" for c in FLOAT_COLUMNS})
        try:
            df = pd.read_csv(
                path,
                dtype=dtypes,
                keep_default_na=False,
                na_values=na,
                true_values=["True", "true"],
                false_values=["False", "false"],
            )
        except FileNotFoundError:
            raise
        except (ValueError, OSError, pd.errors.ParserError) as e:  # UnicodeDecodeError is a ValueError
            raise ResultsError(_damaged(path, e, name_twin)) from None
    else:
        raise ResultsError(f"cannot read results from {path}: expected a results directory, a .csv or a .parquet file.")
    try:
        df = validate(df)
    except ResultsError as e:
        raise ResultsError(f"{path}: {e}") from None
    return _normalise(df)


def _damaged(path: Path, err: Exception, name_twin: bool) -> str:
    """What to do about a results file that cannot be read: which copy of its rows is intact, and the fix.

    Both tables are written by one compaction (parquet first) and the parts are deleted only after both, so when
    results.parquet is damaged, results.csv plus the pending parts hold every row: the fix is to delete the
    damaged file, and the next read or ``fmprobe probe`` uses (and rewrites) the intact twin."""
    head = f"results file {path} is damaged or not a fmprobe results file ({err})."
    if path.parent.name == PENDING_DIR:
        return f"{head} Delete it and rerun `fmprobe probe`: its cell runs again (the other rows are kept)."
    twin = path.with_name(CSV_NAME if path.name == PARQUET_NAME else PARQUET_NAME)
    if name_twin and path.name in (PARQUET_NAME, CSV_NAME) and twin.exists():
        try:
            n = len(_read_file(twin, name_twin=False))
        except ResultsError:
            pass
        else:
            return (
                f"{head} Its twin {twin.name} is intact ({n} rows) and, with pending/, holds every row: delete "
                f"{path} and rerun; fmprobe then reads {twin.name} and rewrites {path.name} from it."
            )
    return (
        f"{head} No intact copy is left: delete {path} and rerun `fmprobe probe` with the same options; the cells "
        "missing from the table run again (their predictions/ files are rewritten)."
    )


def _table_path(path: Path) -> Path | None:
    """The compacted table inside a results directory (parquet is the source of truth), or None."""
    for name in (PARQUET_NAME, CSV_NAME):
        if (path / name).exists():
            return path / name
    return None


def _pending_parts(results_dir: Path) -> list[Path]:
    """Part files not yet compacted, in append order (their names start with a zero-padded sequence number)."""
    folder = results_dir / PENDING_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def _resolve_predictions(df: pd.DataFrame, base: Path) -> pd.DataFrame:
    rel = df["predictions"]
    df["predictions"] = [str((base / p).resolve()) if p and not os.path.isabs(p) else p for p in rel]
    return df


def _dedupe(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate in order; the last row per (cell_id, metric, subgroup) wins."""
    if not frames:
        return _normalise(pd.DataFrame({c: [] for c in COLUMNS}))
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return df.drop_duplicates(DEDUPE_KEY, keep="last").reset_index(drop=True)


def _read_dir_once(results_dir: Path) -> pd.DataFrame | None:
    """The compacted table plus pending parts, or None when a listed part vanished (a compaction ran)."""
    parts = _pending_parts(results_dir)  # listed before the table is read: a compaction folding them in
    table = _table_path(results_dir)  # between the two steps is then caught below as a vanished part
    frames = [_read_file(table)] if table is not None else []
    for part in parts:
        try:
            frames.append(_read_file(part))
        except FileNotFoundError:
            return None
    if not frames:
        raise ResultsError(
            f"no {PARQUET_NAME} or {CSV_NAME} in {results_dir}. Run a study into this directory "
            "first, or pass the directory it wrote."
        )
    return _dedupe(frames)


def _read_dir(results_dir: Path) -> pd.DataFrame:
    """A consistent view of a results directory without taking its lock (it may be read-only)."""
    for _ in range(5):
        df = _read_dir_once(results_dir)
        if df is not None:
            return df
    with exclusive(results_dir / LOCK_NAME, what="these results"):  # compactions keep racing: wait for one
        df = _read_dir_once(results_dir)
    assert df is not None  # nothing is deleted while the lock is held
    return df


def read_results(paths: PathLike | Sequence[PathLike]) -> pd.DataFrame:
    """Read one or several results directories / files into one validated DataFrame.

    A directory's compacted table and its pending parts are read together. Several sources merge by
    concatenation (later sources win on a repeated (cell_id, metric, subgroup)). The ``predictions`` column comes back as
    absolute paths, resolved against each source's directory, so a merged table still finds every predictions
    file.

    Parameters
    ----------
    paths : str or path, or sequence of them
        Results directories (as ``fmprobe probe --out`` writes them), ``results.parquet`` or ``results.csv`` files.

    Returns
    -------
    pandas.DataFrame
        One row per (cell, metric, subgroup), in the schema's column order (:data:`COLUMNS`).

    Raises
    ------
    fmprobe.errors.ResultsError
        No source given, a path that does not exist, a directory without results, or a damaged table (the
        message says which copy is intact and the fix).

    Examples
    --------
    >>> from fmprobe import read_results
    >>> df = read_results("runs/results")  # doctest: +SKIP
    >>> df = read_results(["machineA/results", "machineB/results"])  # doctest: +SKIP
    >>> df[df["is_primary"]].groupby("backbone")["value"].max()  # doctest: +SKIP
    """
    sources = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not sources:
        raise ResultsError("read_results needs at least one results directory or file.")
    frames = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            frames.append(_resolve_predictions(_read_dir(p), p))
        elif p.exists():
            frames.append(_resolve_predictions(_read_file(p), p.parent))
        else:
            raise ResultsError(f"results path {p} does not exist.")
    return _dedupe(frames)


def done_cells(results_dir: PathLike) -> set[str]:
    """cell_ids already finished in ``results_dir`` (empty when nothing has been written yet).

    A cell counts as done only when its rows exist *and* its predictions file does, so a crash between the
    two writes makes the cell run again instead of leaving a row without its evidence.

    Parameters
    ----------
    results_dir : str or path
        A results directory (it need not exist).

    Returns
    -------
    set of str
        The finished cells' ids.

    Examples
    --------
    >>> from fmprobe.results import done_cells
    >>> done_cells("no/such/results")
    set()
    """
    d = Path(results_dir)
    if not d.is_dir() or (_table_path(d) is None and not _pending_parts(d)):
        return set()
    df = read_results(d)
    ok = [cid for cid, pred in zip(df["cell_id"], df["predictions"], strict=True) if not pred or Path(pred).exists()]
    return set(ok)


# ---------------------------------------------------------------------------------------------- writing

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _unwritable(folder: Path, err: OSError, what: str) -> str:
    """The message of a failed write into ``folder``: what failed, why, and the fix."""
    if err.errno in _DISK_FULL:
        fix = "the disk is full: free some space, or choose another folder with --out"
    else:
        fix = "it is read-only or not ours: fix its permissions, or choose another folder with --out"
    return (
        f"cannot write into the {what} {folder} ({err.strerror or err}): {fix}. Files already there are unchanged "
        "(every write is atomic); rerun the same command to go on."
    )


@contextlib.contextmanager
def writing_into(folder: PathLike, what: str = "results folder") -> Iterator[None]:
    """Turn an ``OSError`` raised by the writes inside (read-only folder, full disk, quota) into one
    :class:`ResultsError` naming the folder and the fix, instead of a traceback.

    Parameters
    ----------
    folder : str or path
        The folder written into (named in the message).
    what : str, optional
        What the folder is, for the message (``"report folder"``, ...).

    Returns
    -------
    context manager
        Use it in a ``with`` statement around the writes.

    Raises
    ------
    fmprobe.errors.ResultsError
        An ``OSError`` was raised inside.

    Examples
    --------
    >>> from fmprobe.results import writing_into
    >>> with writing_into("runs/report", "report folder"):  # doctest: +SKIP
    ...     Path("runs/report/report.md").write_text(text)
    """
    try:
        yield
    except OSError as err:
        raise ResultsError(_unwritable(Path(folder), err, what)) from err


def check_writable(folder: PathLike, what: str = "results folder") -> Path:
    """Prove ``folder`` takes a flushed file (:func:`fmprobe._io.prove_writable`) before any work whose output
    would be lost; raises :class:`ResultsError` naming the folder and the fix.

    Parameters
    ----------
    folder : str or path
        The folder to check (created if needed).
    what : str, optional
        What the folder is, for the message.

    Returns
    -------
    Path
        The folder.

    Raises
    ------
    fmprobe.errors.ResultsError
        It cannot be written (read-only, full disk, quota).

    Examples
    --------
    >>> from fmprobe.results import check_writable
    >>> check_writable("runs/report", "report folder")  # doctest: +SKIP
    PosixPath('runs/report')
    """
    with writing_into(Path(folder), what):
        return prove_writable(Path(folder))


def _relative_predictions(df: pd.DataFrame, results_dir: Path) -> pd.DataFrame:
    base = results_dir.resolve()
    out = []
    for p in df["predictions"]:
        if p and os.path.isabs(p):
            try:
                p = Path(p).resolve().relative_to(base).as_posix()
            except ValueError:
                pass  # outside this directory: keep it absolute rather than invent a wrong relative path
        out.append(p)
    df["predictions"] = out
    return df


def _next_part(results_dir: Path) -> Path:
    """The name of the next part file (call with the lock held): one past the highest pending sequence number."""
    parts = _pending_parts(results_dir)
    last = int(parts[-1].name.split("-", 1)[0]) if parts else 0
    return results_dir / PENDING_DIR / f"{last + 1:09d}-{os.getpid()}.parquet"


def append_rows(results_dir: PathLike, rows: pd.DataFrame | Iterable[ResultRow | Mapping[str, Any]]) -> pd.DataFrame:
    """Add rows to ``results_dir`` (created if needed) as one pending part; return them as written.

    Costs one small file whatever the size of the table; :func:`read_results` sees the rows at once and
    :func:`compact_results` folds them into results.parquet / results.csv. The part is written atomically under
    the directory's lock, so concurrent writers neither lose rows nor reorder them.

    Parameters
    ----------
    results_dir : str or path
        The results directory.
    rows : pandas.DataFrame or iterable of ResultRow or Mapping
        The rows to add (nothing is written when empty).

    Returns
    -------
    pandas.DataFrame
        The rows as written (normalised dtypes, predictions paths relative to ``results_dir``).

    Raises
    ------
    fmprobe.errors.ResultsError
        The rows break the schema, or ``results_dir`` cannot be written.

    Examples
    --------
    >>> from fmprobe.results import append_rows, compact_results
    >>> append_rows("runs/results", rows)  # doctest: +SKIP
    >>> compact_results("runs/results")  # doctest: +SKIP
    1
    """
    d = Path(results_dir)
    new = to_frame(rows)
    if new.empty:  # nothing to add: leave the files alone
        return _normalise(pd.DataFrame({c: [] for c in COLUMNS}))
    validate(new)
    with writing_into(d):
        d.mkdir(parents=True, exist_ok=True)
        new = _relative_predictions(_normalise(new), d)
        (d / PENDING_DIR).mkdir(exist_ok=True)
        with exclusive(d / LOCK_NAME, what="these results"):
            atomic_write(_next_part(d), lambda tmp: new.to_parquet(tmp, index=False))
    return new


def compact_results(results_dir: PathLike) -> int:
    """Fold the pending parts into results.parquet and results.csv; return how many parts were folded.

    Under the directory's lock: read the table and the parts, keep the newest row per (cell_id, metric, subgroup), replace
    both tables atomically, and only then delete the parts (a crash before that leaves parts whose rows are
    already in the table: folding them again gives the same table).

    Parameters
    ----------
    results_dir : str or path
        The results directory.

    Returns
    -------
    int
        The number of parts folded (0: nothing was pending, no file touched).

    Raises
    ------
    fmprobe.errors.ResultsError
        A part or table is damaged, or the directory cannot be written.

    Examples
    --------
    >>> from fmprobe.results import compact_results
    >>> compact_results("no/such/results")
    0
    """
    d = Path(results_dir)
    if not _pending_parts(d):
        return 0
    with writing_into(d), exclusive(d / LOCK_NAME, what="these results"):
        parts = _pending_parts(d)
        table = _table_path(d)
        frames = ([_read_file(table)] if table is not None else []) + [_read_file(p) for p in parts]
        merged = _dedupe(frames)
        atomic_write(d / PARQUET_NAME, lambda tmp: merged.to_parquet(tmp, index=False))
        atomic_write(d / CSV_NAME, lambda tmp: merged.to_csv(tmp, index=False))
        for part in parts:
            part.unlink()
    return len(parts)


# ---------------------------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Predictions:
    """Per-sample test predictions of one cell: what paired comparisons and confusion matrices need."""

    ids: np.ndarray  # unicode sample ids [N]
    y_true: np.ndarray  # int [N] (or [N, L] multilabel)
    y_score: np.ndarray  # float probabilities [N, C] (or [N, L])
    meta: dict[str, Any]

    @property
    def task(self) -> str | None:
        return self.meta.get("task")

    @property
    def y_pred(self) -> np.ndarray | None:
        """The predicted classes the label metrics used when they are not ``y_score``'s argmax (an ordinal cell's
        decoded grades, saved as ``meta["y_pred"]``); None otherwise."""
        decoded = self.meta.get("y_pred")
        return None if decoded is None else np.asarray(decoded, dtype=np.int64)

    @property
    def class_names(self) -> list[str]:
        names = self.meta.get("class_names")
        n = self.y_score.shape[1] if self.y_score.ndim == 2 else 0
        return [printable(str(c)) for c in names] if names else [str(i) for i in range(n)]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_predictions(
    results_dir: PathLike,
    cell_id: str,
    ids: Sequence[Any] | np.ndarray,
    y_true: np.ndarray,
    y_score: np.ndarray,
    meta: Mapping[str, Any],
) -> str:
    """Write ``predictions/<cell_id>.npz`` atomically; return its path relative to ``results_dir``.

    The per-sample test scores are what paired comparisons and confusion matrices read later. Ids are stored as
    unicode and meta as a JSON string so the file loads with ``allow_pickle=False``.

    Parameters
    ----------
    results_dir : str or path
        The results directory.
    cell_id : str
        The cell's :func:`cell_id` (the file name).
    ids : sequence or numpy.ndarray
        Unique test sample ids [N].
    y_true : numpy.ndarray
        Integer labels [N] (or [N, L] multilabel).
    y_score : numpy.ndarray
        Scores [N, C] (or [N, L]).
    meta : Mapping
        JSON-serialisable facts (``task``, ``class_names``, ``y_pred`` for decoded ordinal grades, ...).

    Returns
    -------
    str
        ``predictions/<cell_id>.npz``.

    Raises
    ------
    fmprobe.errors.ResultsError
        An unsafe ``cell_id``, mismatching shapes, non-integer labels, repeated ids, meta that is not JSON, or a
        folder that cannot be written.

    Examples
    --------
    >>> import numpy as np
    >>> from fmprobe.results import load_predictions, save_predictions
    >>> rel = save_predictions("runs/results", "79ab8f3e9ab6ca8b", ["a", "b"], np.array([0, 1]),
    ...                        np.array([[0.8, 0.2], [0.3, 0.7]]), {"task": "binary"})  # doctest: +SKIP
    >>> rel  # doctest: +SKIP
    'predictions/79ab8f3e9ab6ca8b.npz'
    """
    if not isinstance(cell_id, str) or not _SAFE_ID.match(cell_id):
        raise ResultsError(f"cell_id {cell_id!r} is not a safe file name; use fmprobe.results.cell_id().")
    ids_arr = np.asarray([str(i) for i in ids], dtype=str)
    yt = np.asarray(y_true)
    ys = np.asarray(y_score, dtype=np.float64)
    n = len(ids_arr)
    if yt.ndim not in (1, 2) or ys.ndim != 2 or len(yt) != n or len(ys) != n:
        raise ResultsError(
            f"predictions for cell {cell_id}: expected ids [N], y_true [N] or [N, L] and y_score "
            f"[N, C] with one N; got ids {ids_arr.shape}, y_true {yt.shape}, y_score {ys.shape}."
        )
    if yt.ndim == 2 and yt.shape != ys.shape:
        raise ResultsError(
            f"predictions for cell {cell_id}: multilabel y_true {yt.shape} and y_score {ys.shape} "
            "must have the same shape."
        )
    if not np.issubdtype(yt.dtype, np.integer):
        if not np.all(np.isfinite(yt)) or not np.all(yt == np.round(yt)):
            raise ResultsError(f"predictions for cell {cell_id}: y_true must hold integer labels.")
        yt = yt.astype(np.int64)
    if len(set(ids_arr.tolist())) != n:
        raise ResultsError(f"predictions for cell {cell_id}: sample ids are not unique.")
    try:
        meta_json = json.dumps(dict(meta), sort_keys=True, default=_json_default)
    except TypeError as e:
        raise ResultsError(f"predictions for cell {cell_id}: meta is not JSON serialisable ({e}).") from None
    d = Path(results_dir) / PREDICTIONS_DIR
    target = d / f"{cell_id}.npz"

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, ids=ids_arr, y_true=yt, y_score=ys, meta=np.asarray(meta_json))

    with writing_into(Path(results_dir)):
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(target, write)
    return f"{PREDICTIONS_DIR}/{cell_id}.npz"


def load_predictions(path: PathLike) -> Predictions:
    """Load a predictions file written by :func:`save_predictions` (never unpickles anything).

    Parameters
    ----------
    path : str or path
        The ``.npz`` file (a results row's ``predictions``, absolute after :func:`read_results`).

    Returns
    -------
    Predictions
        ``ids``, ``y_true``, ``y_score`` and ``meta`` (plus ``task``, ``class_names``, ``y_pred``).

    Raises
    ------
    fmprobe.errors.ResultsError
        The file is absent or is not a predictions file.

    Examples
    --------
    >>> from fmprobe.results import load_predictions
    >>> preds = load_predictions(df["predictions"].iloc[0])  # doctest: +SKIP
    >>> preds.y_score.shape  # doctest: +SKIP
    (90, 2)
    """
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            return Predictions(
                ids=z["ids"].astype(str), y_true=z["y_true"], y_score=z["y_score"], meta=json.loads(str(z["meta"]))
            )
    except FileNotFoundError:
        raise ResultsError(
            f"predictions file {p} does not exist. Rerun the cell, or read the results with "
            "read_results() so relative paths resolve against the results directory."
        ) from None
    except (KeyError, ValueError, OSError) as e:
        raise ResultsError(f"predictions file {p} is not a fmprobe predictions file: {e}.") from None


__all__ = [
    "CELL_KEYS",
    "COLUMNS",
    "CellInfo",
    "MetricResult",
    "Predictions",
    "ResultRow",
    "append_rows",
    "cell_id",
    "check_writable",
    "compact_results",
    "done_cells",
    "load_predictions",
    "printable",
    "read_results",
    "rows_for_cell",
    "save_predictions",
    "to_frame",
    "validate",
    "write_cell",
    "writing_into",
]

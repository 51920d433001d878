"""`fmprobe export`: a verified feature file in a format other tools read without fmprobe or HDF5.

Two formats, both holding every split and readout with the labels, ids, per-sample metadata, task and class names:

- ``parquet``: one row per sample (``split``, ``id``, ``label`` — a list per sample for multilabel —, one column per
  metadata key, one fixed-size list column per readout); the task, class names and fingerprint are in the schema's
  metadata. ``pandas.read_parquet`` or ``polars.read_parquet`` read it.
- ``npz``: arrays named ``<split>/<readout>``, ``<split>/labels``, ``<split>/ids``, ``<split>/meta/<key>``, plus
  ``task`` and ``class_names``; ``numpy.load`` reads it.

The file is verified on open like every read (a damaged cache is never exported) and written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

from fmprobe._io import atomic_write
from fmprobe.errors import CacheError
from fmprobe.store.features import FeatureFile

ExportFormat = Literal["parquet", "npz"]
FORMATS: tuple[ExportFormat, ...] = ("parquet", "npz")


def export_features(features: str | Path, format: ExportFormat = "parquet", out: str | Path | None = None) -> Path:
    """Write a feature file in a format other tools read without fmprobe or HDF5 (``fmprobe export``).

    Every split and readout goes out with the labels, ids, per-sample metadata, task and class names (the layout
    of each format is in this module's docstring). The file is verified on open like every read, so a damaged
    cache is never exported, and written atomically.

    Parameters
    ----------
    features : str or Path
        A feature file written by ``fmprobe extract``.
    format : {"parquet", "npz"}, optional
        ``"parquet"`` (one row per sample; needs pyarrow) or ``"npz"`` (one array per split and field).
    out : str or Path or None, optional
        The file to write (default: the feature file's path with the format's suffix).

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    fmprobe.errors.CacheError
        An unknown ``format``, an ``out`` that is the feature file itself, or a feature file that fails its checks.

    Examples
    --------
    >>> export_features("features/demo/efficientnet_lite0__3f2a9c.h5", "npz")  # doctest: +SKIP
    PosixPath('features/demo/efficientnet_lite0__3f2a9c.npz')
    """
    if format not in FORMATS:
        raise CacheError(f"unknown export format {format!r}; use one of: {', '.join(FORMATS)}.")
    source = FeatureFile(features)
    target = Path(out) if out is not None else source.path.with_suffix(f".{format}")
    if target.resolve() == source.path.resolve():
        raise CacheError(f"{target}: the export would overwrite the feature file; pass another --out.")
    writer = _write_parquet if format == "parquet" else _write_npz
    atomic_write(target, lambda tmp: writer(source, tmp))
    return target


def _write_npz(source: FeatureFile, tmp: Path) -> None:
    arrays: dict[str, np.ndarray] = {"task": np.asarray(source.task), "class_names": np.asarray(source.class_names, dtype=str)}
    for split in source.splits:
        for readout in source.readouts:
            part = source.load(split, readout)
            arrays[f"{split}/{readout}"] = part.features
        arrays[f"{split}/labels"] = part.labels
        arrays[f"{split}/ids"] = part.ids
        arrays.update({f"{split}/meta/{key}": values for key, values in part.metadata.items()})
    with tmp.open("wb") as fh:
        np.savez(fh, **arrays)


def _write_parquet(source: FeatureFile, tmp: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [_split_table(source, split) for split in source.splits]
    table = pa.concat_tables(tables, promote_options="default")
    facts = {"task": source.task, "class_names": source.class_names, "fingerprint": source.fingerprint, "key": source.key}
    table = table.replace_schema_metadata({"fmprobe": json.dumps(facts)})
    pq.write_table(table, tmp)


def _split_table(source: FeatureFile, split: str):  # -> pyarrow.Table
    import pyarrow as pa

    columns: dict[str, object] = {}
    for readout in source.readouts:
        part = source.load(split, readout)
        flat = pa.array(np.ascontiguousarray(part.features).reshape(-1))
        columns[readout] = pa.FixedSizeListArray.from_arrays(flat, part.features.shape[1])
    labels = part.labels.tolist() if part.labels.ndim == 2 else part.labels
    head = {"split": pa.array([split] * len(part.ids)), "id": pa.array(part.ids.tolist()), "label": pa.array(labels)}
    meta = {key: pa.array(values.tolist(), type=pa.string()) for key, values in part.metadata.items()}
    return pa.table({**head, **meta, **columns})

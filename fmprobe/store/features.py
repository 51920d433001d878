"""The HDF5 feature file: written once from a complete journal, verified on every open.

Layout (readable with plain h5py; see README):
``/<split>/features/<readout>`` [N, D] float16|float32, ``/<split>/labels`` [N] or [N, L] int64,
``/<split>/ids`` [N] UTF-8 strings, ``/<split>/skipped_ids`` and ``/<split>/skipped_reasons``;
root attributes ``fingerprint`` (JSON), ``key``, ``complete``, ``task``, ``class_names`` (JSON), versions, time.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from fmprobe._io import atomic_write
from fmprobe.errors import CacheError
from fmprobe.store.fingerprint import SCHEMA_VERSION
from fmprobe.store.journal import Batch
from fmprobe.tasks import SPLIT_NAMES

STRING = h5py.string_dtype("utf-8")
REQUIRED_ATTRS = ("fingerprint", "key", "complete", "task", "class_names", "schema_version", "readouts")


@dataclass(frozen=True)
class SplitLayout:
    """What the writer needs from a dataset split: ids and labels in extraction order."""

    ids: tuple[str, ...]
    labels: np.ndarray


def write_feature_file(
    path: Path,
    attrs: Mapping[str, object],
    splits: Mapping[str, SplitLayout],
    readouts: tuple[str, ...],
    dims: Mapping[str, int],
    feature_dtype: str,
    batches: Iterable[Batch],
    skipped: Mapping[str, dict[int, str]],
) -> None:
    """Stream committed batches into a new HDF5 file at ``path`` (written beside it, then renamed in, so the file
    exists only when complete)."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            for name, value in attrs.items():
                h5.attrs[name] = str(value) if isinstance(value, str) else value  # numpy str_ has no HDF5 type
            h5.attrs["complete"] = False
            for split, layout in splits.items():
                _create_split(h5, split, layout, skipped.get(split, {}), readouts, dims, feature_dtype)
            cursor = _write_batches(h5, splits, readouts, feature_dtype, batches)
            for split in splits:
                for name in ("labels", "ids", "skipped_ids", "skipped_reasons"):
                    h5[f"{split}/{name}"].attrs["crc32"] = _crc_of(h5[f"{split}/{name}"])
            for split in splits:
                expected = h5[f"{split}/labels"].shape[0]
                if cursor[split] != expected:
                    raise CacheError(
                        f"{path}: internal error: journal holds {cursor[split]} rows of {split} but {expected} were "
                        "expected. Run again with --force."
                    )
            h5.attrs["complete"] = True

    try:
        atomic_write(path, write)
    except OSError as err:
        raise CacheError(
            f"{path}: cannot write the feature file ({os.strerror(err.errno) if err.errno else err}). The extracted "
            "batches are kept in the journal beside it: free space and run the same command again."
        ) from err


def _create_split(
    h5: h5py.File,
    split: str,
    layout: SplitLayout,
    bad: Mapping[int, str],
    readouts: tuple[str, ...],
    dims: Mapping[str, int],
    feature_dtype: str,
) -> None:
    """One split's group: empty feature datasets sized for the kept rows, then labels, ids and the skipped rows."""
    keep = np.ones(len(layout.ids), dtype=bool)
    keep[list(bad)] = False
    n_ok = int(keep.sum())
    group = h5.create_group(split)
    group.attrs["n_total"] = len(layout.ids)
    for readout in readouts:
        group.create_dataset(
            f"features/{readout}",
            shape=(n_ok, dims[readout]),
            dtype=feature_dtype,
            chunks=(max(1, min(n_ok, max(1, (1 << 20) // (dims[readout] * 2)))), dims[readout]) if n_ok else None,
        )
    group.create_dataset("labels", data=layout.labels[keep].astype(np.int64))
    group.create_dataset("ids", data=np.asarray([i for i, k in zip(layout.ids, keep) if k], dtype=object), dtype=STRING)
    rows = sorted(bad)
    group.create_dataset("skipped_ids", data=np.asarray([layout.ids[r] for r in rows], dtype=object), dtype=STRING)
    group.create_dataset("skipped_reasons", data=np.asarray([bad[r] for r in rows], dtype=object), dtype=STRING)


def _write_batches(
    h5: h5py.File, splits: Mapping[str, SplitLayout], readouts: tuple[str, ...], feature_dtype: str, batches: Iterable[Batch]
) -> dict[str, int]:
    """Append the batches' rows in order and store each feature dataset's checksum; returns rows written per split."""
    cursor = {split: 0 for split in splits}
    crcs = {(split, readout): 0 for split in splits for readout in readouts}
    for batch in batches:
        n = next(iter(batch.features.values())).shape[0] if batch.features else 0
        start = cursor[batch.split]
        for readout in readouts:
            rows = np.ascontiguousarray(batch.features[readout], dtype=feature_dtype)
            h5[f"{batch.split}/features/{readout}"][start : start + n] = rows
            crcs[(batch.split, readout)] = zlib.crc32(rows.tobytes(), crcs[(batch.split, readout)])
        cursor[batch.split] = start + n
    for (split, readout), crc in crcs.items():  # checksums: damaged bytes are found on open, never served
        h5[f"{split}/features/{readout}"].attrs["crc32"] = crc
    return cursor


def _crc_of(dataset: h5py.Dataset, rows_per_block: int = 8192) -> int:
    """CRC-32 of a dataset's values, read in blocks of rows (memory stays flat)."""
    crc = 0
    for start in range(0, dataset.shape[0], rows_per_block):
        block = dataset[start : start + rows_per_block]
        if dataset.dtype.kind == "O":
            data = "\0".join(v.decode() if isinstance(v, bytes) else str(v) for v in block).encode() + b"\0"
        else:
            data = np.ascontiguousarray(block).tobytes()
        crc = zlib.crc32(data, crc)
    return crc


@dataclass(frozen=True)
class SplitFeatures:
    features: np.ndarray
    labels: np.ndarray
    ids: np.ndarray


class FeatureFile:
    """A verified, complete feature file. Opening checks completeness, schema and (optionally) the fingerprint."""

    def __init__(self, path: Path | str, expected_key: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"{self.path}: feature file not found. Run `fmprobe extract` to create it.")
        try:
            with h5py.File(self.path, "r") as h5:
                attrs = {k: h5.attrs[k] for k in h5.attrs}
                missing = [a for a in REQUIRED_ATTRS if a not in attrs]
                if missing:
                    raise CacheError(
                        f"{self.path}: not an fmprobe feature file (missing attributes {missing}). Rebuild it with "
                        "`fmprobe extract ... --force`."
                    )
                self._check(attrs, expected_key)
                self.splits = tuple(k for k in SPLIT_NAMES if k in h5)
                self._check_rows(h5)
        except OSError as err:
            raise CacheError(
                f"{self.path}: corrupt or truncated HDF5 file ({err}). Delete it or rebuild with `fmprobe extract "
                "... --force`."
            ) from err
        self.attrs = attrs
        self.fingerprint: dict[str, object] = json.loads(str(attrs["fingerprint"]))
        self.key = str(attrs["key"])
        self.task = str(attrs["task"])
        self.class_names: tuple[str, ...] = tuple(json.loads(str(attrs["class_names"])))
        self.readouts: tuple[str, ...] = tuple(json.loads(str(attrs["readouts"])))
        self.primary_metric = str(attrs.get("primary_metric", ""))
        self.dataset = str(self.fingerprint.get("dataset", ""))
        self.backbone = str(self.fingerprint.get("backbone", ""))
        self.resolution = int(self.fingerprint.get("resolution", 0))  # type: ignore[call-overload]

    def _check(self, attrs: Mapping[str, object], expected_key: str | None) -> None:
        if int(attrs["schema_version"]) != SCHEMA_VERSION:  # type: ignore[call-overload]
            raise CacheError(
                f"{self.path}: written with feature-file schema {attrs['schema_version']}, this fmprobe reads "
                f"{SCHEMA_VERSION}. Rebuild it with `fmprobe extract ... --force`."
            )
        if not bool(attrs["complete"]):
            raise CacheError(f"{self.path}: incomplete feature file; rebuild it with `fmprobe extract ... --force`.")
        if expected_key is not None and attrs["key"] != expected_key:
            raise CacheError(f"{self.path}: fingerprint {attrs['key']} does not match the expected {expected_key}.")

    def _check_rows(self, h5: h5py.File) -> None:
        if not self.splits:
            raise CacheError(f"{self.path}: no splits stored; rebuild with `fmprobe extract ... --force`.")
        for split in self.splits:
            group = h5[split]
            n = group["labels"].shape[0]
            counts = {"ids": group["ids"].shape[0], **{f"features/{r}": group[f"features/{r}"].shape[0] for r in group["features"]}}
            total = n + group["skipped_ids"].shape[0]
            if any(c != n for c in counts.values()) or total != int(group.attrs["n_total"]):
                raise CacheError(
                    f"{self.path}: split {split!r} is inconsistent (labels {n}, {counts}, expected {int(group.attrs['n_total'])} "
                    "rows in all). The file is damaged: rebuild it with `fmprobe extract ... --force`."
                )
            for name in ("labels", "ids", "skipped_ids", "skipped_reasons", *(f"features/{r}" for r in group["features"])):
                dataset = group[name]
                if "crc32" not in dataset.attrs or _crc_of(dataset) != int(dataset.attrs["crc32"]):
                    raise CacheError(
                        f"{self.path}: checksum mismatch in {split}/{name}: the file is damaged. Rebuild it with "
                        "`fmprobe extract ... --force`."
                    )

    def load(self, split: str, readout: str | None = None, dtype: str | None = None) -> SplitFeatures:
        """Features, labels and ids of one split (``readout`` defaults to the first stored)."""
        readout = readout or self.readouts[0]
        if split not in self.splits:
            raise CacheError(f"{self.path}: no split {split!r}; stored: {', '.join(self.splits)}.")
        if readout not in self.readouts:
            raise CacheError(
                f"{self.path}: readout {readout!r} was not extracted; stored: {', '.join(self.readouts)}. Extract "
                "again with --readouts to add it (a new cache file)."
            )
        try:
            with h5py.File(self.path, "r") as h5:
                group = h5[split]
                features = group[f"features/{readout}"][()]
                labels = group["labels"][()]
                ids = np.asarray(group["ids"].asstr()[()], dtype=str)
        except OSError as err:
            raise CacheError(f"{self.path}: cannot read split {split!r} ({err}); rebuild with --force.") from err
        if dtype is not None:
            features = features.astype(dtype, copy=False)
        if not np.isfinite(features).all():
            raise CacheError(
                f"{self.path}: split {split!r} readout {readout!r} contains NaN/inf features. Re-extract with "
                "--force; if it persists the weights are broken: check --weights."
            )
        return SplitFeatures(features, labels, ids)

    def skipped(self, split: str) -> list[tuple[str, str]]:
        with h5py.File(self.path, "r") as h5:
            group = h5[split]
            return list(zip(group["skipped_ids"].asstr()[()], group["skipped_reasons"].asstr()[()]))

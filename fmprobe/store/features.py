"""The HDF5 feature file: written once from a complete journal, verified on every open.

Layout (readable with plain h5py; see README):
``/<split>/features/<readout>`` [N, D] float16|float32, ``/<split>/labels`` [N] or [N, L] int64,
``/<split>/ids`` [N] UTF-8 strings, ``/<split>/meta/<key>`` [N] UTF-8 per-sample metadata (``group``, ``study``,
``age``, ``sex``, ...; one value per stored row, aligned with ``ids``: skipped rows have none; "" = unknown; absent in
files written before it existed), ``/<split>/skipped_ids`` and ``/<split>/skipped_reasons``;
root attributes ``fingerprint`` (JSON), ``key``, ``complete``, ``task``, ``class_names`` (JSON), versions, time.
The first 512 bytes are an HDF5 user block holding the file's seal (:mod:`fmprobe.store.integrity`).

Metadata is the one part not in the key (it changes no embedding): :func:`refresh_metadata` replaces a file's
``meta/`` with a dataset's current one, features, ids and attributes copied as they are.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fmprobe._io import atomic_write
from fmprobe.errors import CacheError
from fmprobe.store import integrity
from fmprobe.store.fingerprint import SCHEMA_VERSION, key_of
from fmprobe.store.journal import Batch
from fmprobe.tasks import SPLIT_NAMES, TASK_TYPES

STRING = h5py.string_dtype("utf-8")
REQUIRED_ATTRS = ("fingerprint", "key", "complete", "task", "class_names", "schema_version", "readouts")
WRITE_SEALED = True  # False writes a file as fmprobe did before seals (tests of the unsealed path only)
# What h5py and HDF5 raise on metadata they cannot make sense of: a damaged file, never a traceback.
PARSE_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError, IndexError)


@dataclass(frozen=True)
class SplitLayout:
    """What the writer needs from a dataset split: ids, labels and per-sample metadata in extraction order."""

    ids: tuple[str, ...]
    labels: np.ndarray
    metadata: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


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
        with h5py.File(tmp, "w", userblock_size=integrity.SEAL_SIZE if WRITE_SEALED else 0) as h5:
            for name, value in attrs.items():
                h5.attrs[name] = str(value) if isinstance(value, str) else value  # numpy str_ has no HDF5 type
            h5.attrs["complete"] = False
            for split, layout in splits.items():
                _create_split(h5, split, layout, skipped.get(split, {}), readouts, dims, feature_dtype)
            cursor = _write_batches(h5, splits, readouts, feature_dtype, batches)
            for split in splits:
                for name in _row_datasets(h5[split]):
                    h5[f"{split}/{name}"].attrs["crc32"] = _crc_of(h5[f"{split}/{name}"])
            for split in splits:
                expected = h5[f"{split}/labels"].shape[0]
                if cursor[split] != expected:
                    raise CacheError(
                        f"{path}: internal error: journal holds {cursor[split]} rows of {split} but {expected} were "
                        "expected. Run again with --force."
                    )
            h5.attrs["complete"] = True
        if WRITE_SEALED:
            integrity.seal(tmp)

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
    _store_metadata(group, {key: [v for v, k in zip(values, keep) if k] for key, values in layout.metadata.items()})
    rows = sorted(bad)
    group.create_dataset("skipped_ids", data=np.asarray([layout.ids[r] for r in rows], dtype=object), dtype=STRING)
    group.create_dataset("skipped_reasons", data=np.asarray([bad[r] for r in rows], dtype=object), dtype=STRING)


def _store_metadata(group: h5py.Group, metadata: Mapping[str, Sequence[str]], crc: bool = False) -> None:
    """``/<split>/meta/<key>``: one UTF-8 value per stored row (``crc``: with its checksum; the writer adds those
    for every row dataset at the end)."""
    for key, values in metadata.items():
        dataset = group.create_dataset(f"meta/{key}", data=np.asarray(list(values), dtype=object), dtype=STRING)
        if crc:
            dataset.attrs["crc32"] = _crc_of(dataset)


def _row_datasets(group: h5py.Group) -> tuple[str, ...]:
    """The per-row datasets of a split group other than the features (each carries a CRC attribute)."""
    return ("labels", "ids", "skipped_ids", "skipped_reasons", *(f"meta/{k}" for k in group.get("meta", {})))


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
    """One split as stored: features, labels, ids and per-sample metadata (key -> values; files written before
    metadata existed have none)."""

    features: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    metadata: dict[str, np.ndarray] = field(default_factory=dict)


class FeatureFile:
    """A verified, complete feature file written by ``fmprobe extract``: embeddings, labels, ids and metadata.

    Opening checks the seal (before h5py reads a byte), completeness, schema, the stored fingerprint against its
    key and every attribute results depend on, and (optionally) the key, so a damaged or stale cache is refused by
    name instead of feeding wrong numbers to a probe.

    Parameters
    ----------
    path : str or Path
        The ``.h5`` feature file.
    expected_key : str or None, optional
        Refuse the file unless its fingerprint key is this one (a file of another extraction under this name).

    Attributes
    ----------
    path : Path
        The file.
    key : str
        The hash of its fingerprint (the cache key).
    fingerprint : dict
        Everything the embeddings depend on (dataset, backbone, weights, resolution, readouts, ...).
    dataset, backbone : str
        The dataset's and the backbone's names, as in the fingerprint.
    task : str
        ``binary``, ``multiclass``, ``multilabel`` or ``ordinal``.
    class_names : tuple of str
        The label names.
    splits : tuple of str
        The stored splits, in ``train``, ``val``, ``test`` order.
    readouts : tuple of str
        The stored readouts (``pooled``, ``cls``, ``mean_patch``, ...); the first is every reader's default.
    resolution : int
        The input size the images were resized to.

    Raises
    ------
    fmprobe.errors.CacheError
        The file is absent, incomplete, damaged, of another schema version, or not the ``expected_key``.

    Examples
    --------
    >>> from fmprobe import FeatureFile
    >>> ff = FeatureFile("features/demo/efficientnet_lite0__3f2a9c.h5")  # doctest: +SKIP
    >>> ff.splits, ff.readouts  # doctest: +SKIP
    (('train', 'val', 'test'), ('pooled',))
    >>> X, y = ff.to_numpy("train")  # doctest: +SKIP
    """

    def __init__(self, path: Path | str, expected_key: str | None = None, *, _trusted: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise CacheError(f"{self.path}: feature file not found. Run `fmprobe extract` to create it.")
        checked = _trusted or integrity.verify(self.path)
        if not checked:
            integrity.verify_unsealed(self.path)  # a child process parsed it without crashing or hanging
        try:
            with h5py.File(self.path, "r") as h5:
                attrs = {k: h5.attrs[k] for k in h5.attrs}
                self.splits = tuple(k for k in SPLIT_NAMES if k in h5)
                self._check_version(attrs)
                self._read_attrs(attrs)
                self._check(attrs, expected_key)
                self._check_rows(h5, crc=_trusted)  # else the seal (or the child process) covered every byte
        except PARSE_ERRORS as err:
            raise CacheError(f"{self.path}: damaged HDF5 metadata ({type(err).__name__}: {err}). {integrity.REBUILD}") from err
        self.attrs = attrs

    def _read_attrs(self, attrs: Mapping[str, object]) -> None:
        """Decode the root attributes; refuse any that is malformed or disagrees with the stored fingerprint."""
        fingerprint_json = _text(self.path, attrs, "fingerprint")
        self.key = _text(self.path, attrs, "key")
        if key_of(fingerprint_json) != self.key:
            raise CacheError(
                f"{self.path}: its key {self.key} is not the hash of its stored fingerprint: the fingerprint or the key "
                f"was edited or damaged. {integrity.REBUILD}"
            )
        fingerprint = _json(self.path, fingerprint_json, "fingerprint", dict)
        self.fingerprint: dict[str, object] = fingerprint
        self.task = _text(self.path, attrs, "task")
        self.class_names: tuple[str, ...] = tuple(_json(self.path, _text(self.path, attrs, "class_names"), "class_names", list))
        self.readouts: tuple[str, ...] = tuple(_json(self.path, _text(self.path, attrs, "readouts"), "readouts", list))
        self.primary_metric = _text(self.path, attrs, "primary_metric") if "primary_metric" in attrs else ""
        # the dataset's evaluation facts (``Dataset.evaluation``); files written before it existed have none
        self.evaluation: dict[str, object] = (
            _json(self.path, _text(self.path, attrs, "evaluation"), "evaluation", dict) if "evaluation" in attrs else {}
        )
        self.dataset = str(fingerprint.get("dataset", ""))
        self.backbone = str(fingerprint.get("backbone", ""))
        resolution = fingerprint.get("resolution", 0)
        self.resolution = resolution if isinstance(resolution, int) and not isinstance(resolution, bool) else -1
        disagree = [
            name
            for name, bad in (
                ("task", self.task not in TASK_TYPES),
                ("readouts", list(self.readouts) != fingerprint.get("readouts") or not self.readouts),
                ("backbone", "backbone" in attrs and attrs["backbone"] != self.backbone),
                ("schema_version", attrs["schema_version"] != fingerprint.get("schema_version", attrs["schema_version"])),
                ("weights_label", self.backbone.endswith(":random") and attrs.get("weights_label", "random") != "random"),
                ("resolution", self.resolution < 0),
            )
            if bad
        ]
        if disagree:
            raise CacheError(
                f"{self.path}: attribute(s) {', '.join(disagree)} disagree with the stored fingerprint or are invalid: the "
                f"file was edited or damaged. {integrity.REBUILD}"
            )

    def _check_version(self, attrs: Mapping[str, object]) -> None:
        """First what this fmprobe can read at all: the required attributes and the schema version."""
        missing = [a for a in REQUIRED_ATTRS if a not in attrs]
        if missing:
            raise CacheError(f"{self.path}: not an fmprobe feature file (missing attributes {missing}). {integrity.REBUILD}")
        version = attrs["schema_version"]
        if not isinstance(version, int | np.integer) or isinstance(version, bool | np.bool_):
            raise CacheError(f"{self.path}: attribute 'schema_version' is {version!r}, not an integer. {integrity.REBUILD}")
        if int(version) != SCHEMA_VERSION:
            raise CacheError(
                f"{self.path}: written with feature-file schema {version}, this fmprobe reads "
                f"{SCHEMA_VERSION}. Rebuild it with `fmprobe extract ... --force`."
            )

    def _check(self, attrs: Mapping[str, object], expected_key: str | None) -> None:
        if not isinstance(attrs["complete"], bool | np.bool_) or not attrs["complete"]:
            raise CacheError(f"{self.path}: incomplete feature file; rebuild it with `fmprobe extract ... --force`.")
        if expected_key is not None and self.key != expected_key:
            raise CacheError(
                f"{self.path}: fingerprint {self.key} does not match the expected {expected_key} (a file of another "
                f"extraction under this name). {integrity.REBUILD}"
            )

    def _check_rows(self, h5: h5py.File, crc: bool) -> None:
        """Row counts agree across a split's datasets, every readout is stored, and (unless the seal already
        covered every byte) each dataset matches its CRC."""
        if not self.splits:
            raise CacheError(f"{self.path}: no splits stored; rebuild with `fmprobe extract ... --force`.")
        for split in self.splits:
            group = h5[split]
            absent = [r for r in self.readouts if r not in group["features"]]
            if absent:
                raise CacheError(
                    f"{self.path}: the attributes list readout(s) {absent} that split {split!r} does not store: the file "
                    f"was edited or damaged. {integrity.REBUILD}"
                )
            n = group["labels"].shape[0]
            counts = {"ids": group["ids"].shape[0], **{f"features/{r}": group[f"features/{r}"].shape[0] for r in group["features"]}}
            counts.update({f"meta/{k}": group[f"meta/{k}"].shape[0] for k in group.get("meta", {})})
            total = n + group["skipped_ids"].shape[0]
            if any(c != n for c in counts.values()) or total != int(group.attrs["n_total"]):
                raise CacheError(
                    f"{self.path}: split {split!r} is inconsistent (labels {n}, {counts}, expected {int(group.attrs['n_total'])} "
                    "rows in all). The file is damaged: rebuild it with `fmprobe extract ... --force`."
                )
            for name in (*_row_datasets(group), *(f"features/{r}" for r in group["features"])):
                dataset = group[name]
                if crc and ("crc32" not in dataset.attrs or _crc_of(dataset) != int(dataset.attrs["crc32"])):
                    raise CacheError(
                        f"{self.path}: checksum mismatch in {split}/{name}: the file is damaged. Rebuild it with "
                        "`fmprobe extract ... --force`."
                    )

    def load(self, split: str, readout: str | None = None, dtype: str | None = None) -> SplitFeatures:
        """Features, labels, ids and per-sample metadata of one split, read in one go.

        Features are checked finite on every read: NaN/inf embeddings (broken weights) are refused, never probed.

        Parameters
        ----------
        split : str
            ``train``, ``val`` or ``test`` (one of :attr:`splits`).
        readout : str or None, optional
            One of :attr:`readouts`; None: the first stored.
        dtype : str or None, optional
            Cast the features (e.g. ``"float32"``); None keeps the stored dtype (float16 or float32).

        Returns
        -------
        SplitFeatures
            ``features`` [N, D], ``labels`` [N] (or [N, L] multilabel, -1 unknown), ``ids`` [N] (str) and
            ``metadata`` (key -> [N] str values).

        Raises
        ------
        fmprobe.errors.CacheError
            The split or readout is not stored, cannot be read, or holds NaN/inf features.

        Examples
        --------
        >>> part = FeatureFile("features/demo/efficientnet_lite0__3f2a9c.h5").load("test")  # doctest: +SKIP
        >>> part.features.shape, part.ids[:2]  # doctest: +SKIP
        ((90, 1280), array(['images/lesion_00003.png', 'images/lesion_00007.png'], dtype='<U23'))
        """
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
                metadata = {k: np.asarray(v.asstr()[()], dtype=str) for k, v in group.get("meta", {}).items()}
        except OSError as err:
            raise CacheError(f"{self.path}: cannot read split {split!r} ({err}); rebuild with --force.") from err
        if dtype is not None:
            features = features.astype(dtype, copy=False)
        if not np.isfinite(features).all():
            raise CacheError(
                f"{self.path}: split {split!r} readout {readout!r} contains NaN/inf features. Re-extract with "
                "--force; if it persists the weights are broken: check --weights."
            )
        return SplitFeatures(features, labels, ids, metadata)

    def sizes(self) -> dict[str, int]:
        """Stored rows per split (skipped images excluded).

        Returns
        -------
        dict of str to int
            Split name -> number of stored rows.

        Examples
        --------
        >>> FeatureFile("features/demo/efficientnet_lite0__3f2a9c.h5").sizes()  # doctest: +SKIP
        {'train': 420, 'val': 90, 'test': 90}
        """
        with h5py.File(self.path, "r") as h5:
            return {split: int(h5[f"{split}/labels"].shape[0]) for split in self.splits}

    def dims(self) -> dict[str, int]:
        """Embedding width per readout.

        Returns
        -------
        dict of str to int
            Readout name -> feature dimension D.

        Examples
        --------
        >>> FeatureFile("features/demo/efficientnet_lite0__3f2a9c.h5").dims()  # doctest: +SKIP
        {'pooled': 1280}
        """
        with h5py.File(self.path, "r") as h5:
            return {r: int(h5[f"{self.splits[0]}/features/{r}"].shape[1]) for r in self.readouts}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={n}" for s, n in self.sizes().items())
        dims = ", ".join(f"{r}={d}" for r, d in self.dims().items())
        return (
            f"FeatureFile({str(self.path)!r}, dataset={self.dataset!r}, backbone={self.backbone!r}, task={self.task!r}, "
            f"classes={len(self.class_names)}, splits=({sizes}), readouts=({dims}), resolution={self.resolution}, key={self.key!r})"
        )

    def to_numpy(self, split: str, readout: str | None = None, dtype: str | None = "float32") -> tuple[np.ndarray, np.ndarray]:
        """``X, y`` of one split, as scikit-learn takes them.

        Parameters
        ----------
        split : str
            ``train``, ``val`` or ``test``.
        readout : str or None, optional
            One of :attr:`readouts`; None: the first stored.
        dtype : str or None, optional
            The features' dtype (default float32, what scikit-learn estimators expect); None keeps the stored one.

        Returns
        -------
        X : numpy.ndarray
            Features [N, D].
        y : numpy.ndarray
            Labels [N] (int64), or [N, L] for a multilabel task (-1 unknown).

        Raises
        ------
        fmprobe.errors.CacheError
            As :meth:`load`.

        Examples
        --------
        >>> from sklearn.linear_model import LogisticRegression  # doctest: +SKIP
        >>> ff = FeatureFile("features/demo/efficientnet_lite0__3f2a9c.h5")  # doctest: +SKIP
        >>> X, y = ff.to_numpy("train")  # doctest: +SKIP
        >>> LogisticRegression(max_iter=1000).fit(X, y).score(*ff.to_numpy("test"))  # doctest: +SKIP
        0.73
        """
        part = self.load(split, readout, dtype)
        return part.features, part.labels

    def to_pandas(self, split: str, readout: str | None = None) -> Any:
        """One split as a pandas DataFrame indexed by sample id, for exploring features next to labels and metadata.

        Parameters
        ----------
        split : str
            ``train``, ``val`` or ``test``.
        readout : str or None, optional
            One of :attr:`readouts`; None: the first stored.

        Returns
        -------
        pandas.DataFrame
            Index ``id``; columns: the label (one ``label[<class>]`` column per label of a multilabel task, -1
            unknown), the per-sample metadata, then one ``<readout>[i]`` column per dimension (float32).

        Raises
        ------
        fmprobe.errors.CacheError
            As :meth:`load`.

        Examples
        --------
        >>> df = FeatureFile("features/demo/efficientnet_lite0__3f2a9c.h5").to_pandas("val")  # doctest: +SKIP
        >>> list(df.columns[:3])  # doctest: +SKIP
        ['label', 'group', 'pooled[0]']
        """
        import pandas as pd

        part = self.load(split, readout, "float32")
        readout = readout or self.readouts[0]
        if part.labels.ndim == 2:
            labels = {f"label[{name}]": part.labels[:, i] for i, name in enumerate(self.class_names)}
        else:
            labels = {"label": part.labels}
        columns = {**labels, **part.metadata}
        features = pd.DataFrame(part.features, columns=[f"{readout}[{i}]" for i in range(part.features.shape[1])])
        frame = pd.concat([pd.DataFrame(columns), features], axis=1)
        frame.index = pd.Index(part.ids.tolist(), name="id")
        return frame

    def skipped(self, split: str) -> list[tuple[str, str]]:
        """The images of one split that extraction skipped (``--on-error skip``), with the reason for each.

        Parameters
        ----------
        split : str
            ``train``, ``val`` or ``test``.

        Returns
        -------
        list of (str, str)
            ``(sample id, reason)`` per skipped image; empty when none was skipped.

        Raises
        ------
        fmprobe.errors.CacheError
            The skipped rows cannot be read (the file is damaged).

        Examples
        --------
        >>> FeatureFile("features/demo/efficientnet_lite0__3f2a9c.h5").skipped("train")  # doctest: +SKIP
        [('images/lesion_00042.png', 'cannot decode the image')]
        """
        try:
            with h5py.File(self.path, "r") as h5:
                group = h5[split]
                return list(zip(group["skipped_ids"].asstr()[()], group["skipped_reasons"].asstr()[()]))
        except PARSE_ERRORS as err:
            raise CacheError(f"{self.path}: cannot read the skipped rows of {split!r} ({err}). {integrity.REBUILD}") from err


def _text(path: Path, attrs: Mapping[str, object], name: str) -> str:
    """A string attribute as text; one that is not UTF-8 text (or holds surrogates) is refused by name."""
    value = attrs[name]
    try:
        text = value.decode() if isinstance(value, bytes) else value
        if not isinstance(text, str):
            raise TypeError(f"a {type(value).__name__}, not text")
        if not _utf8(text):
            raise TypeError("it holds a lone surrogate")
    except (UnicodeError, TypeError) as err:
        raise CacheError(f"{path}: attribute {name!r} is not UTF-8 text ({err}). {integrity.REBUILD}") from err
    return text


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeError:  # a lone surrogate: would reach the results table and fail there
        return False
    return True


def _json(path: Path, text: str, name: str, kind: type) -> Any:
    """A JSON attribute of the expected kind (a list holds only strings); anything else is refused by name."""
    try:
        value = json.loads(text)
    except ValueError as err:
        raise CacheError(f"{path}: attribute {name!r} is not valid JSON ({err}). {integrity.REBUILD}") from err
    if not isinstance(value, kind) or (kind is list and not all(isinstance(v, str) and _utf8(v) for v in value)):
        what = "a JSON list of strings" if kind is list else "a JSON object"
        raise CacheError(f"{path}: attribute {name!r} is not {what}. {integrity.REBUILD}")
    return value


# ---- metadata: stored beside the features, never part of their key ----


def metadata_for_rows(ids: Sequence[str], layout: SplitLayout, where: str) -> dict[str, tuple[str, ...]]:
    """``layout``'s metadata for the rows a feature file stores (``ids``: the kept rows, in file order); rows
    skipped at extraction have none."""
    position = {sample: n for n, sample in enumerate(layout.ids)}
    unknown = [i for i in ids if i not in position]
    if unknown:
        raise CacheError(
            f"{where}: stores {len(unknown)} sample(s) the dataset does not list (e.g. {unknown[:3]}), so its metadata "
            f"cannot be matched to the rows. {integrity.REBUILD}"
        )
    index = [position[i] for i in ids]
    return {key: tuple(str(values[n]) for n in index) for key, values in layout.metadata.items()}


def describe_metadata_change(
    stored: Mapping[str, Mapping[str, tuple[str, ...]]], wanted: Mapping[str, Mapping[str, tuple[str, ...]]]
) -> str:
    """The keys added, removed and changed over all splits (``+age,+sex,-study,~group``), or "" when equal."""
    added: set[str] = set()
    removed: set[str] = set()
    changed: set[str] = set()
    for split, new in wanted.items():
        old = stored.get(split, {})
        added |= new.keys() - old.keys()
        removed |= old.keys() - new.keys()
        changed |= {key for key in new.keys() & old.keys() if new[key] != old[key]}
    return ",".join([*(f"+{k}" for k in sorted(added)), *(f"-{k}" for k in sorted(removed)), *(f"~{k}" for k in sorted(changed))])


def metadata_update(
    feature_file: FeatureFile, splits: Mapping[str, SplitLayout]
) -> tuple[dict[str, dict[str, tuple[str, ...]]], str]:
    """(the metadata each stored split should hold, what differs from what it holds: "" when nothing). Splits
    the dataset does not have keep theirs. Reads ids and metadata only."""
    stored: dict[str, dict[str, tuple[str, ...]]] = {}
    wanted: dict[str, dict[str, tuple[str, ...]]] = {}
    try:
        with h5py.File(feature_file.path, "r") as h5:
            for split in (s for s in feature_file.splits if s in splits):
                group = h5[split]
                stored[split] = {key: tuple(values.asstr()[()]) for key, values in group.get("meta", {}).items()}
                ids = list(group["ids"].asstr()[()])
                wanted[split] = metadata_for_rows(ids, splits[split], f"{feature_file.path} split {split!r}")
    except PARSE_ERRORS as err:
        raise CacheError(f"{feature_file.path}: cannot read the stored metadata ({err}). {integrity.REBUILD}") from err
    return wanted, describe_metadata_change(stored, wanted)


def refresh_metadata(feature_file: FeatureFile | Path | str, splits: Mapping[str, SplitLayout]) -> str:
    """Make a feature file's ``/<split>/meta/*`` that of ``splits`` (a dataset's ids and metadata per split),
    leaving features, labels, ids and attributes as they are; returns what changed ("" when nothing did).

    Metadata is not part of the cache key (it changes no embedding), so a corrected sex or age column must not
    re-extract: the file is copied beside itself with the new metadata (checksummed like the writer's), sealed,
    opened once as a check and renamed over the old one; a failure at any point leaves the old file as it was.
    The caller holds the extraction lock (``fmprobe.extract`` does), so no writer races the rename."""
    if not isinstance(feature_file, FeatureFile):
        feature_file = FeatureFile(feature_file)
    wanted, change = metadata_update(feature_file, splits)
    if change:
        path, key = feature_file.path, feature_file.key
        atomic_write(path, lambda tmp: _rewrite_metadata(path, tmp, wanted, key))
    return change


def _rewrite_metadata(source: Path, tmp: Path, metadata: Mapping[str, Mapping[str, tuple[str, ...]]], key: str) -> None:
    """A sealed copy of ``source`` at ``tmp`` whose splits in ``metadata`` hold it as their ``meta/``; every other
    object and attribute is copied as stored (HDF5's object copy: features byte for byte, their CRCs with them)."""
    with h5py.File(source, "r") as src, h5py.File(tmp, "w", userblock_size=integrity.SEAL_SIZE) as dst:
        _copy_attrs(src, dst)
        for split in src:
            group = dst.create_group(split)
            _copy_attrs(src[split], group)
            for child in src[split]:
                if child != "meta" or split not in metadata:
                    src.copy(src[split][child], group, name=child)
            if split in metadata:
                _store_metadata(group, metadata[split], crc=True)
    integrity.seal(tmp)
    FeatureFile(tmp, expected_key=key)  # the copy opens like the original: only then does it replace it


def _copy_attrs(source: h5py.Group, target: h5py.Group) -> None:
    for name in source.attrs:
        target.attrs.create(name, source.attrs[name], dtype=source.attrs.get_id(name).dtype)

"""An append-only, checksummed log of extracted batches: what makes extraction resumable after ``kill -9``.

HDF5 files can be left unreadable by a kill in the middle of a metadata flush, so features are first appended
to this journal, one fsync'ed record per batch. A record that is cut short or fails its CRC marks the end of
the committed work; resuming truncates there and continues. The final HDF5 file is written from the journal
in one pass and renamed into place, so it exists only when complete.

Record layout: ``MAGIC | u32 meta_len | u64 data_len | u32 crc32(meta+data) | meta (JSON) | data``.
The first record's meta is the header (fingerprint, shard, file attributes) and its data the layout (every
sample id and label, so a journal alone can be turned into the final file); later records hold one batch each.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fmprobe.errors import CacheError

MAGIC = b"FMPJ"
HEAD = struct.Struct("<4sIQI")


@dataclass
class Batch:
    """One committed batch: rows ``start .. start+count`` of ``split``; ``skipped`` maps row -> reason."""

    split: str
    start: int
    count: int
    skipped: dict[int, str]
    features: dict[str, np.ndarray]  # readout -> [count - len(skipped), D]


@dataclass(frozen=True)
class Layout:
    """Ids, labels and per-sample metadata (split -> key -> values) of every split, in extraction order."""

    ids: dict[str, tuple[str, ...]]
    labels: dict[str, np.ndarray]
    metadata: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    def describe(self) -> dict[str, list[int]]:
        return {s: [len(self.ids[s]), *self.labels[s].shape[1:]] for s in self.ids}

    def encode(self) -> bytes:
        """Per split: id-blob length, ids, labels; then the metadata as one JSON block (absent when there is
        none, so a journal written before metadata existed decodes the same)."""
        parts = []
        for split in self.ids:
            ids = "\0".join(self.ids[split]).encode()
            parts += [np.asarray([len(ids)], "<i8").tobytes(), ids, np.ascontiguousarray(self.labels[split], "<i8").tobytes()]
        if any(self.metadata.values()):
            parts.append(json.dumps({s: {k: list(v) for k, v in m.items()} for s, m in self.metadata.items()}).encode())
        return b"".join(parts)

    @classmethod
    def decode(cls, description: dict[str, list[int]], data: bytes) -> Layout:
        ids, labels, offset = {}, {}, 0
        for split, shape in description.items():
            (length,) = np.frombuffer(data, "<i8", 1, offset)
            offset += 8
            text = data[offset : offset + int(length)].decode()
            offset += int(length)
            ids[split] = tuple(text.split("\0")) if shape[0] else ()
            count = int(np.prod(shape))
            labels[split] = np.frombuffer(data, "<i8", count, offset).reshape(shape).astype(np.int64)
            offset += count * 8
        stored = json.loads(data[offset:].decode()) if offset < len(data) else {}
        metadata = {s: {k: tuple(v) for k, v in m.items()} for s, m in stored.items()}
        return cls(ids, labels, metadata)


def _encode(meta: dict[str, object], arrays: list[np.ndarray]) -> bytes:
    return _encode_raw(meta, b"".join(np.ascontiguousarray(a).tobytes() for a in arrays))


def _read_record(fh: BinaryIO) -> tuple[dict[str, object], bytes] | None:
    head = fh.read(HEAD.size)
    if len(head) < HEAD.size:
        return None
    magic, meta_len, data_len, crc = HEAD.unpack(head)
    if magic != MAGIC or meta_len > 1 << 24:
        return None
    meta_bytes = fh.read(meta_len)
    data = fh.read(data_len)
    if len(meta_bytes) < meta_len or len(data) < data_len or zlib.crc32(data, zlib.crc32(meta_bytes)) != crc:
        return None
    try:
        return json.loads(meta_bytes), data
    except ValueError:
        return None


def _encode_raw(meta: dict[str, object], data: bytes) -> bytes:
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    crc = zlib.crc32(data, zlib.crc32(meta_bytes))
    return HEAD.pack(MAGIC, len(meta_bytes), len(data), crc) + meta_bytes + data


def _same_work(a: dict[str, object], b: dict[str, object]) -> bool:
    """Two headers describe the same extraction if all but the batch size (and the derived layout) agree."""
    ignore = ("batch_size", "layout", "attrs")  # attrs hold the start time; the fingerprint decides
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


class Journal:
    """Append batches durably; read back what was committed."""

    def __init__(self, path: Path, header: dict[str, object], fsync: bool = True) -> None:
        self.path = path
        self.header = header
        self.fsync = fsync
        self.layout: Layout | None = None
        self._fh: BinaryIO | None = None

    @classmethod
    def read(cls, path: Path) -> Journal:
        """Open an existing journal read-only (for merging); CacheError if its header is unreadable."""
        with path.open("rb") as fh:
            first = _read_record(fh)
        if first is None or not isinstance(first[0].get("header"), dict):
            raise CacheError(f"{path}: unreadable partial-extraction journal. Delete it and extract that part again.")
        journal = cls(path, first[0]["header"])  # type: ignore[arg-type]
        journal.layout = Layout.decode(journal.header["layout"], first[1])  # type: ignore[arg-type]
        return journal

    @classmethod
    def open(
        cls, path: Path, header: dict[str, object], layout: Layout | None = None, fsync: bool = True
    ) -> tuple[Journal, list[Batch]]:
        """Open for appending, resuming when a journal with the same header exists; returns committed batches.

        A journal of another fingerprint (the file name is the key, so only a hash collision or a hand-edited
        file) is refused; a torn tail is cut off.
        """
        journal = cls(path, header, fsync)
        batches, end = journal._resume() if path.exists() else ([], 0)
        mode = "r+b" if end else "wb"
        fh = path.open(mode)
        if end:
            fh.truncate(end)
            fh.seek(end)
        else:
            if layout is None:
                raise ValueError("a new journal needs the layout")
            header = {**header, "layout": layout.describe()}
            journal.header, journal.layout = header, layout
            fh.write(_encode_raw({"header": header}, layout.encode()))
            journal._sync(fh)
        journal._fh = fh
        return journal, batches

    def _resume(self) -> tuple[list[Batch], int]:
        """The committed batches of an existing journal of the same work, and where its intact records end
        (0: nothing to keep, start afresh); adopts its header so batches line up on resume."""
        batches: list[Batch] = []
        end = 0
        with self.path.open("rb") as fh:
            first = _read_record(fh)
            stored = first[0].get("header") if first is not None else None
            if isinstance(stored, dict) and _same_work(stored, self.header):
                self.header = stored  # keep the original batch size so batches line up on resume
                self.layout = Layout.decode(stored["layout"], first[1])  # type: ignore[index, arg-type]
                end = fh.tell()
                for batch, offset in self._iter_batches(fh):
                    batches.append(batch)
                    end = offset
            elif isinstance(stored, dict):
                raise CacheError(
                    f"{self.path}: a partial extraction with a different fingerprint or layout is in the way. Delete "
                    "it or run with --force."
                )
        return batches, end

    def _iter_batches(self, fh: BinaryIO) -> Iterator[tuple[Batch, int]]:
        dims: dict[str, int] = self.header["dims"]  # type: ignore[assignment]
        dtype = np.dtype(self.header["feature_dtype"])  # type: ignore[arg-type]
        while True:
            record = _read_record(fh)
            if record is None:
                return
            meta, data = record
            n_ok = int(meta["count"]) - len(meta["skipped"])  # type: ignore[arg-type]
            features, offset = {}, 0
            for readout in self.header["readouts"]:  # type: ignore[attr-defined]
                size = n_ok * dims[readout] * dtype.itemsize
                features[readout] = np.frombuffer(data, dtype=dtype, count=n_ok * dims[readout], offset=offset).reshape(
                    n_ok, dims[readout]
                )
                offset += size
            skipped = {int(k): str(v) for k, v in meta["skipped"].items()}  # type: ignore[attr-defined]
            yield Batch(str(meta["split"]), int(meta["start"]), int(meta["count"]), skipped, features), fh.tell()

    def append(self, batch: Batch) -> None:
        assert self._fh is not None
        meta = {"split": batch.split, "start": batch.start, "count": batch.count, "skipped": batch.skipped}
        arrays = [batch.features[r].astype(self.header["feature_dtype"], copy=False) for r in self.header["readouts"]]  # type: ignore[attr-defined]
        record = _encode(meta, arrays)
        position = self._fh.tell()
        try:
            self._fh.write(record)
            self._sync(self._fh)
        except OSError as err:
            with contextlib.suppress(OSError):  # leave no torn record behind if we can help it
                self._fh.truncate(position)
            raise CacheError(
                f"{self.path}: cannot write ({os.strerror(err.errno) if err.errno else err}). The batches committed "
                "before are kept: free space (or fix the folder) and run the same command again to resume."
            ) from err

    def _sync(self, fh: BinaryIO) -> None:
        fh.flush()
        if self.fsync:
            os.fsync(fh.fileno())

    def batches(self) -> Iterator[Batch]:
        """Re-read all committed batches (streaming: one batch in memory at a time)."""
        for batch, _ in self.batches_with_offsets():
            yield batch

    def batches_with_offsets(self) -> Iterator[tuple[Batch, int]]:
        """Committed batches with the file offset where each record starts."""
        with self.path.open("rb") as fh:
            _read_record(fh)
            start = fh.tell()
            for batch, end in self._iter_batches(fh):
                yield batch, start
                start = end

    def batch_at(self, offset: int) -> Batch:
        with self.path.open("rb") as fh:
            fh.seek(offset)
            return next(self._iter_batches(fh))[0]

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

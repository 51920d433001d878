"""An append-only, checksummed log of extracted batches: what makes extraction resumable after ``kill -9``.

HDF5 files can be left unreadable by a kill in the middle of a metadata flush, so features are first appended
to this journal, one fsync'ed record per batch. A record that is cut short or fails its CRC marks the end of
the committed work; resuming truncates there and continues. The final HDF5 file is written from the journal
in one pass and renamed into place, so it exists only when complete.

Record layout: ``MAGIC | u32 meta_len | u64 data_len | u32 crc32(meta+data) | meta (JSON) | data``.
The first record's meta is the header (fingerprint and layout); later records hold one batch each.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
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


def _encode(meta: dict[str, object], arrays: list[np.ndarray]) -> bytes:
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode()
    data = b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
    crc = zlib.crc32(data, zlib.crc32(meta_bytes))
    return HEAD.pack(MAGIC, len(meta_bytes), len(data), crc) + meta_bytes + data


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


def _same_work(a: dict[str, object], b: dict[str, object]) -> bool:
    """Two headers describe the same extraction if all but the batch size agree."""
    return {k: v for k, v in a.items() if k != "batch_size"} == {k: v for k, v in b.items() if k != "batch_size"}


class Journal:
    """Append batches durably; read back what was committed."""

    def __init__(self, path: Path, header: dict[str, object], fsync: bool = True) -> None:
        self.path = path
        self.header = header
        self.fsync = fsync
        self._fh: BinaryIO | None = None

    @classmethod
    def open(cls, path: Path, header: dict[str, object], fsync: bool = True) -> tuple[Journal, list[Batch]]:
        """Open for appending, resuming when a journal with the same header exists; returns committed batches.

        A journal of another fingerprint (the file name is the key, so only a hash collision or a hand-edited
        file) is refused; a torn tail is cut off.
        """
        journal = cls(path, header, fsync)
        batches: list[Batch] = []
        end = 0
        if path.exists():
            with path.open("rb") as fh:
                first = _read_record(fh)
                stored = first[0].get("header") if first is not None else None
                if isinstance(stored, dict) and _same_work(stored, header):
                    journal.header = stored  # keep the original batch size so batches line up on resume
                    end = fh.tell()
                    for batch, offset in journal._iter_batches(fh):
                        batches.append(batch)
                        end = offset
                elif isinstance(stored, dict):
                    raise CacheError(
                        f"{path}: a partial extraction with a different fingerprint or layout is in the way. Delete "
                        "it or run with --force."
                    )
        mode = "r+b" if end else "wb"
        fh = path.open(mode)
        if end:
            fh.truncate(end)
            fh.seek(end)
        else:
            fh.write(_encode({"header": header}, []))
            journal._sync(fh)
        journal._fh = fh
        return journal, batches

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
        self._fh.write(_encode(meta, arrays))
        self._sync(self._fh)

    def _sync(self, fh: BinaryIO) -> None:
        fh.flush()
        if self.fsync:
            os.fsync(fh.fileno())

    def batches(self) -> Iterator[Batch]:
        """Re-read all committed batches (streaming: one batch in memory at a time)."""
        with self.path.open("rb") as fh:
            _read_record(fh)
            for batch, _ in self._iter_batches(fh):
                yield batch

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

"""A reusable pixel cache: images decoded and resized once per dataset and geometry, as uint8 on disk.

Decoding and resizing compete with the model for the CPU; a study that runs several backbones with the same
input geometry (size, crop, interpolation, resize mode) on one dataset pays for it once. The cache is a
memory-mapped ``.npy`` of ``[N, 3, S, S]`` uint8 plus the valid height/width per image.

Shared by every process that extracts the dataset, so it is written like the feature file: one writer at a time
(a lock, taken without waiting: a second writer decodes its own images instead), into temporary files renamed
into place when complete, and a marker written last that holds the CRC-32 of both arrays (and the reasons of
images that failed). A reader verifies the checksums before using a byte; a damaged cache is never read, it is
reported and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fmprobe._io import atomic_write_text, exclusive, remove_dead_temporaries, temporary_path
from fmprobe.errors import CacheError

log = logging.getLogger(__name__)

FORMAT = 2  # markers of other formats (e.g. the first, without checksums) are rebuilt


def _crc(array: np.ndarray, rows_per_block: int = 256) -> int:
    crc = 0
    for start in range(0, array.shape[0], rows_per_block):
        crc = zlib.crc32(np.ascontiguousarray(array[start : start + rows_per_block]).data, crc)
    return crc


class PixelCache:
    def __init__(self, folder: Path, dataset_digest: str, geometry: Mapping[str, object], n_images: int, size: int) -> None:
        key = hashlib.sha256(json.dumps([dataset_digest, dict(geometry)], sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.pixels_path = folder / f"{key}.pixels.npy"
        self.sizes_path = folder / f"{key}.sizes.npy"
        self.marker = folder / f"{key}.done.json"
        self.lock_path = folder / f"{key}.lock"
        self.n_images, self.size = n_images, size
        self.pixels: np.ndarray | None = None
        self.sizes: np.ndarray | None = None
        self.errors: dict[int, str] = {}
        self._writing: tuple[contextlib.ExitStack, Path, Path] | None = None  # the held lock and the temporary files

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n_images, 3, self.size, self.size)

    @property
    def complete(self) -> bool:
        return self.marker.exists() and self.pixels_path.exists() and self.sizes_path.exists()

    def open_for_reading(self) -> bool:
        """Map a complete cache whose checksums hold; False (saying why) where it is damaged, of another shape or
        being rebuilt by another process: then it is not read at all."""
        try:
            with exclusive(self.lock_path, wait=False, what="this pixel cache", remove=True):
                problem = self._map_verified()
        except CacheError:
            log.info(f"pixel cache: another process is rebuilding {self.pixels_path.name}; this run decodes its own images")
            return False
        if problem:
            self.pixels = self.sizes = None
            log.warning(f"pixel cache {self.pixels_path} is damaged ({problem}): not read; it is rebuilt where this run covers every image")
        return problem is None

    def _map_verified(self) -> str | None:
        """Map the arrays and check them against the marker; the problem found, or None."""
        try:
            marker = json.loads(self.marker.read_text(encoding="utf-8"))
            self.pixels = np.load(self.pixels_path, mmap_mode="r")
            self.sizes = np.load(self.sizes_path, mmap_mode="r")
        except (OSError, ValueError, UnicodeDecodeError) as err:
            return f"unreadable: {err}"
        if not isinstance(marker, dict) or marker.get("format") != FORMAT:
            return "written by an older fmprobe, without checksums"
        if self.pixels.shape != self.shape or self.sizes.shape != (self.n_images, 2):
            return f"shape {self.pixels.shape} does not fit this dataset's {self.shape}"
        if [_crc(self.pixels), _crc(self.sizes)] != marker.get("crc32"):
            return "checksum mismatch"
        try:
            self.errors = {int(k): str(v) for k, v in marker["errors"].items()}
        except (KeyError, AttributeError, ValueError) as err:
            return f"marker unreadable: {err}"
        return None

    def open_for_writing(self) -> bool:
        """Take the cache's lock without waiting and map fresh temporary arrays; False (saying so) where another
        process is writing this cache: that run's result serves the next backbone."""
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(exclusive(self.lock_path, wait=False, what="this pixel cache", remove=True))
        except CacheError:
            log.info(f"pixel cache: another process is writing {self.pixels_path.name}; this run decodes its own images")
            return False
        remove_dead_temporaries(self.folder)
        pixels_tmp, sizes_tmp = temporary_path(self.pixels_path), temporary_path(self.sizes_path)
        self._writing = (stack, pixels_tmp, sizes_tmp)
        try:
            self.pixels = np.lib.format.open_memmap(pixels_tmp, mode="w+", dtype=np.uint8, shape=self.shape)
            self.sizes = np.lib.format.open_memmap(sizes_tmp, mode="w+", dtype=np.int32, shape=(self.n_images, 2))
        except BaseException:
            self.abandon()
            raise
        return True

    def write(self, index: np.ndarray, pixels: np.ndarray, sizes: np.ndarray) -> None:
        assert self.pixels is not None and self.sizes is not None
        self.pixels[index] = pixels
        self.sizes[index] = sizes

    def finish(self, errors: Mapping[int, str]) -> None:
        """Flush, rename the arrays into place and write the marker with their checksums (only now does the cache
        count as present), then release the lock."""
        assert self._writing is not None and isinstance(self.pixels, np.memmap) and isinstance(self.sizes, np.memmap)
        stack, pixels_tmp, sizes_tmp = self._writing
        try:
            for array, tmp in ((self.pixels, pixels_tmp), (self.sizes, sizes_tmp)):
                array.flush()
                with tmp.open("rb") as fh:
                    os.fsync(fh.fileno())
            crcs = [_crc(self.pixels), _crc(self.sizes)]
            self.marker.unlink(missing_ok=True)  # a reader never pairs an old marker with new arrays
            os.replace(pixels_tmp, self.pixels_path)
            os.replace(sizes_tmp, self.sizes_path)
            atomic_write_text(self.marker, json.dumps({"format": FORMAT, "crc32": crcs, "errors": {str(k): v for k, v in errors.items()}}))
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Stop writing: remove the temporary arrays (if not yet renamed) and release the lock."""
        if self._writing is None:
            return
        stack, pixels_tmp, sizes_tmp = self._writing
        self._writing = None
        self.pixels = self.sizes = None
        pixels_tmp.unlink(missing_ok=True)
        sizes_tmp.unlink(missing_ok=True)
        stack.close()

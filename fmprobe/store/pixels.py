"""A reusable pixel cache: images decoded and resized once per dataset and geometry, as uint8 on disk.

Decoding and resizing compete with the model for the CPU; a study that runs several backbones with the same
input geometry (size, crop, interpolation, resize mode) on one dataset pays for it once. The cache is a
memory-mapped ``.npy`` of ``[N, 3, S, S]`` uint8 plus the valid height/width per image; it counts as present only
once its marker file (written last, with the reasons of images that failed) exists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fmprobe._io import atomic_write_text


class PixelCache:
    def __init__(self, folder: Path, dataset_digest: str, geometry: Mapping[str, object], n_images: int, size: int) -> None:
        key = hashlib.sha256(json.dumps([dataset_digest, dict(geometry)], sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder.mkdir(parents=True, exist_ok=True)
        self.pixels_path = folder / f"{key}.pixels.npy"
        self.sizes_path = folder / f"{key}.sizes.npy"
        self.marker = folder / f"{key}.done.json"
        self.n_images, self.size = n_images, size
        self.pixels: np.ndarray | None = None
        self.sizes: np.ndarray | None = None
        self.errors: dict[int, str] = {}

    @property
    def complete(self) -> bool:
        return self.marker.exists() and self.pixels_path.exists() and self.sizes_path.exists()

    def open_for_reading(self) -> None:
        self.pixels = np.load(self.pixels_path, mmap_mode="r")
        self.sizes = np.load(self.sizes_path, mmap_mode="r")
        self.errors = {int(k): v for k, v in json.loads(self.marker.read_text())["errors"].items()}
        if self.pixels.shape != (self.n_images, 3, self.size, self.size):
            raise ValueError(f"{self.pixels_path}: shape {self.pixels.shape} does not fit this dataset")

    def open_for_writing(self) -> None:
        self.marker.unlink(missing_ok=True)
        self.pixels = np.lib.format.open_memmap(self.pixels_path, mode="w+", dtype=np.uint8, shape=(self.n_images, 3, self.size, self.size))
        self.sizes = np.lib.format.open_memmap(self.sizes_path, mode="w+", dtype=np.int32, shape=(self.n_images, 2))

    def write(self, index: np.ndarray, pixels: np.ndarray, sizes: np.ndarray) -> None:
        assert self.pixels is not None and self.sizes is not None
        self.pixels[index] = pixels
        self.sizes[index] = sizes

    def finish(self, errors: Mapping[int, str]) -> None:
        """Flush and write the marker: only now does the cache count as present."""
        assert isinstance(self.pixels, np.memmap) and isinstance(self.sizes, np.memmap)
        self.pixels.flush()
        self.sizes.flush()
        atomic_write_text(self.marker, json.dumps({"errors": {str(k): v for k, v in errors.items()}}))

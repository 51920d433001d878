"""Dataset types: what every adapter returns.

A dataset is images + labels + splits + a task type. Images are produced lazily by an ``ImageSource`` so that
extraction can stream 100k files without holding them. Datasets never normalise: preprocessing follows the
backbone's weights (``fmprobe.backbones.preprocess``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, UnidentifiedImageError

from fmprobe.errors import DatasetError, ImageError
from fmprobe.registry import closest
from fmprobe.tasks import PRIMARY_METRIC, TASK_TYPES, TaskType

# The conversion every 8-bit PIL-decoded image gets (to RGB, nothing else); a cache-key component.
DEFAULT_IMAGE_CONVERSION = "pil-rgb8"


class ImageSource(Protocol):
    """Random access to the images of one split, as 8-bit RGB PIL images."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...

    def describe(self, index: int) -> str:
        """A human-readable name of one image (its path), for error messages."""
        ...


def to_rgb(image: Image.Image, where: str) -> Image.Image:
    """Convert an 8-bit grey or RGB image to RGB; refuse formats whose conversion would guess.

    16-bit and float images need a windowing choice, alpha channels a background choice and palette images
    often encode label maps, so those are errors that say how to convert the file instead of silent guesses.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "L":
        return image.convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        raise ImageError(
            f"{where}: {'16' if mode.startswith('I;16') else '32'}-bit image (PIL mode {mode}). Backbones take 8-bit "
            "images: window it to 8 bits first (e.g. rescale the intensity range you care about to 0-255 and save "
            "as an 8-bit PNG), or use a dataset adapter that reads the raw format (DICOM) and windows it."
        )
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        raise ImageError(
            f"{where}: image has an alpha channel (PIL mode {mode}). fmprobe will not guess a background: "
            "flatten it onto the background you want and save as RGB, e.g. "
            "`Image.alpha_composite(Image.new('RGBA', im.size, 'black'), im).convert('RGB')`."
        )
    if mode == "P":
        raise ImageError(
            f"{where}: palette (indexed-colour) image. Palette PNGs are often label masks rather than photos; if "
            "this really is the image, save it as RGB first (`im.convert('RGB').save(path)`)."
        )
    if mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    raise ImageError(f"{where}: unsupported PIL image mode {mode}; save the image as 8-bit RGB or greyscale.")


def decode_image_bytes(data: bytes, where: str) -> Image.Image:
    """Decode and fully load one encoded image, turning every decoder failure into an ImageError naming it."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return to_rgb(im, where) if im.mode != "RGB" else im.copy()
    except ImageError:
        raise
    except UnidentifiedImageError:  # PIL's message names an in-memory object address: keep reasons reproducible
        raise ImageError(
            f"{where}: cannot decode image (not a recognised image format). Re-download or re-export it, or run "
            "with --on-error skip to leave it out (it is then recorded as skipped)."
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(
            f"{where}: cannot decode image ({err}). The file is truncated or not an image: re-download or "
            "re-export it, or run with --on-error skip to leave it out (it is then recorded as skipped)."
        ) from err


@dataclass(frozen=True)
class ArraySource:
    """Images held in a uint8 array ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (RGB), e.g. MedMNIST."""

    images: np.ndarray
    name: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def load(self, index: int) -> Image.Image:
        array = self.images[index]
        image = Image.fromarray(array)  # uint8 [H,W] -> L, [H,W,3] -> RGB
        return image.convert("RGB") if image.mode != "RGB" else image

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"


@dataclass(frozen=True)
class FileSource:
    """Images stored as files; ``paths`` are absolute."""

    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(
                f"{path}: image file not found. Restore it, fix the path in the dataset listing, or run with "
                "--on-error skip to leave it out."
            ) from None
        except OSError as err:
            raise ImageError(f"{path}: cannot read image file ({err}).") from err
        return decode_image_bytes(data, str(path))

    def describe(self, index: int) -> str:
        return str(self.paths[index])


@dataclass(frozen=True)
class Split:
    """One split: sample ids (unique, stable), labels and the images."""

    name: str
    ids: tuple[str, ...]
    labels: np.ndarray
    source: ImageSource

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.labels) or len(self.ids) != len(self.source):
            raise DatasetError(
                f"split {self.name!r}: {len(self.ids)} ids, {len(self.labels)} labels and {len(self.source)} images "
                "disagree; the dataset listing is inconsistent."
            )

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Dataset:
    """Everything downstream needs to know about a dataset, independent of where it came from."""

    name: str
    spec: str
    task: TaskType
    class_names: tuple[str, ...]
    splits: dict[str, Split]
    content_digest: str
    primary_metric: str = ""
    description: str = ""
    # How raw pixels became 8-bit RGB (e.g. how a DICOM was windowed): part of the feature cache's key.
    image_conversion: str = DEFAULT_IMAGE_CONVERSION
    # Source-specific facts for the user (CheXpert's competition labels, CBIS-DDSM's layout); never a cache key.
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASK_TYPES:
            raise DatasetError(f"dataset {self.name!r}: unknown task type {self.task!r}; one of {TASK_TYPES}.")
        if not self.primary_metric:
            object.__setattr__(self, "primary_metric", PRIMARY_METRIC[self.task])

    @property
    def num_images(self) -> int:
        return sum(len(s) for s in self.splits.values())

    def summary(self) -> str:
        sizes = ", ".join(f"{name} {len(split)}" for name, split in self.splits.items())
        return f"{self.name}: {self.task}, {len(self.class_names)} classes, {sizes}"


def digest_parts(*parts: object) -> str:
    """A short, stable SHA-256 over JSON-serialisable parts (lists, dicts, strings, numbers)."""
    payload = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(payload).hexdigest()[:20]


def labels_digest(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels).astype(np.int64).tobytes()).hexdigest()[:20]


def file_listing_digest(paths: Sequence[Path], root: Path) -> str:
    """Digest of (relative path, size, mtime) per file: changes when any image is replaced or edited.

    Hashing every byte of a 25k-image dataset takes minutes; size + modification time catches edits and
    replacements at the cost of one stat per file. Missing files contribute a marker so they change it too.
    """
    h = hashlib.sha256()
    for path in paths:
        try:
            st = path.stat()
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{path.relative_to(root) if path.is_relative_to(root) else path}\0{stamp}\n".encode())
    return h.hexdigest()[:20]


def subset_split(split: Split, limit: int, seed: int = 0) -> Split:
    """A seeded random ``limit``-sample subset of a split (quick looks, tests); original order is preserved."""
    if limit >= len(split):
        return split
    index = np.sort(np.random.default_rng(seed).choice(len(split), size=limit, replace=False))
    source = _IndexedSource(split.source, tuple(int(i) for i in index))
    return Split(split.name, tuple(split.ids[i] for i in index), split.labels[index], source)


@dataclass(frozen=True)
class _IndexedSource:
    parent: ImageSource
    index: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> Image.Image:
        return self.parent.load(self.index[i])

    def describe(self, i: int) -> str:
        return self.parent.describe(self.index[i])


def duplicated(values: Sequence[str], limit: int = 3) -> list[str]:
    """The first ``limit`` values (sorted) that occur more than once, for "duplicate id" errors."""
    return sorted(v for v, n in Counter(values).items() if n > 1)[:limit]


def not_found(path: Path, what: str) -> DatasetError:
    """A missing file or folder of a published layout, with similarly named entries beside it (``Train.csv``)."""
    near = closest(path.name, os.listdir(path.parent)) if path.parent.is_dir() else []
    hint = f" Found similar: {', '.join(near)}." if near else ""
    return DatasetError(f"{path} not found: {what}.{hint}")

"""Dataset types: what every adapter returns.

A dataset is images + labels + splits + a task type. Images are produced lazily by an ``ImageSource`` so that
extraction can stream 100k files without holding them. Datasets never normalise: preprocessing follows the
backbone's weights (``fmprobe.backbones.preprocess``).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fmprobe.errors import DatasetError, ImageError
from fmprobe.registry import closest
from fmprobe.tasks import METADATA_KEY, PRIMARY_METRIC, TASK_TYPES, TaskType

# How pixels became 8-bit RGB, a cache-key component (``Dataset.image_conversion``). Arrays (MedMNIST, demo) are
# converted to RGB and nothing else; image files are also turned upright by their EXIF orientation, which arrays
# cannot carry. (Before EXIF was applied files had the array tag; the new tag re-extracts them once.)
DEFAULT_IMAGE_CONVERSION = "pil-rgb8"
FILE_IMAGE_CONVERSION = "pil-rgb8-exif"
# File name endings whose images may be decoded at reduced size (DCT-domain scaling, ``Image.draft``): the feature
# fingerprint records the decode mode for datasets holding such files, so it never depends on the files' contents.
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
# (width, height) of a stored image -> the smallest size it may be decoded at, or None (full size).
DraftRequest = Callable[[int, int], "tuple[int, int] | None"]
# The largest image (in pixels) fmprobe decodes when set (0: no limit); unset, PIL's decompression-bomb guard applies.
MAX_PIXELS_ENV = "FMPROBE_MAX_IMAGE_PIXELS"


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


def pixel_limit() -> int | None:
    """The user's pixel limit from ``$FMPROBE_MAX_IMAGE_PIXELS`` (0: none), or None (PIL's own guard applies)."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise DatasetError(f"{MAX_PIXELS_ENV}={text!r}: give a number of pixels (e.g. 400000000), or 0 for no limit.")
    return int(text)


def _too_large(where: str, pixels: int | None, reason: str) -> ImageError:
    value = pixels if pixels else "N"
    return ImageError(
        f"{where}: image too large to decode ({reason}); a huge image can be a decompression bomb. If you trust the "
        f"file, raise the limit: {MAX_PIXELS_ENV}={value} (pixels; 0 = no limit); or downscale it first (e.g. "
        "`im.reduce(4).save(path)`); or run with --on-error skip to leave it out."
    )


def high_bit_depth(image: Image.Image, data: bytes) -> str | None:
    """Which >8-bit encoding a file has that PIL opened in an 8-bit mode anyway (keeping only each sample's high
    byte: 12-bit data becomes 0-15), or None. PIL reports 16-bit grey as mode I;16, but 16-bit RGB(A) PNG, TIFF
    and PPM files as plain RGB/RGBA; only the file header tells."""
    if image.format == "PNG" and data[12:16] == b"IHDR" and len(data) > 24 and data[24] > 8:
        return f"PNG bit depth {data[24]}"
    if image.format == "TIFF":
        bits = getattr(image, "tag_v2", {}).get(258)  # BitsPerSample, one value per channel
        values = bits if isinstance(bits, tuple) else (bits,) if bits else ()
        if values and max(values) > 8:
            return f"TIFF BitsPerSample {values}"
    if image.format == "PPM" and image.tile and len(image.tile[0].args or ()) > 1:
        maxval = image.tile[0].args[1]
        if isinstance(maxval, int) and maxval > 255:
            return f"PPM maxval {maxval}"
    return None


def _upright(image: Image.Image, where: str) -> Image.Image:
    """The image turned by its EXIF orientation (phone and camera photos store it rotated), as a loaded copy."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as err:  # a damaged EXIF block raises struct/Key/Type/Value errors from several readers
        raise ImageError(
            f"{where}: cannot read the EXIF orientation ({type(err).__name__}: {err}). Re-save the image without "
            "EXIF (e.g. `Image.open(p).save(p2, exif=b'')`), or run with --on-error skip to leave it out."
        ) from None


def _decode(data: bytes, where: str, draft: DraftRequest | None = None) -> Image.Image:
    limit = pixel_limit()
    if limit is not None:
        Image.MAX_IMAGE_PIXELS = None  # the user's limit replaces PIL's guard; it is checked just below
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        if limit and width * height > limit:
            raise _too_large(where, width * height, f"{width}x{height} = {width * height} pixels, {MAX_PIXELS_ENV}={limit}")
        if im.mode in ("RGB", "RGBA", "L", "LA") and (depth := high_bit_depth(im, data)):
            raise ImageError(
                f"{where}: 16-bit image ({depth}, opened as PIL mode {im.mode}, which would keep only the high byte of "
                "each sample). Backbones take 8-bit images: window it to 8 bits first (e.g. rescale the intensity "
                "range you care about to 0-255 per channel and save as an 8-bit PNG)."
            )
        if draft is not None and im.format == "JPEG" and (request := draft(width, height)):
            im.draft(im.mode, request)  # decode at 1/2, 1/4 or 1/8 scale, still at least `request`
        im.load()
        image = _upright(im, where)
    return to_rgb(image, where)


def decode_image_bytes(data: bytes, where: str, draft: DraftRequest | None = None) -> Image.Image:
    """Decode and fully load one encoded image, upright (EXIF orientation) and as 8-bit RGB, turning every decoder
    failure into an ImageError naming it. ``draft`` lets a JPEG decode at reduced size (see :data:`DraftRequest`)."""
    try:
        return _decode(data, where, draft)
    except ImageError:
        raise
    except UnidentifiedImageError:  # PIL's message names an in-memory object address: keep reasons reproducible
        raise ImageError(
            f"{where}: cannot decode image (not a recognised image format). Re-download or re-export it, or run "
            "with --on-error skip to leave it out (it is then recorded as skipped)."
        ) from None
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        raise _too_large(where, int(found.group(1)) if found else None, f"PIL: {err}") from None
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

    @property
    def conversion(self) -> str:
        return DEFAULT_IMAGE_CONVERSION


@dataclass(frozen=True)
class FileSource:
    """Images stored as files; ``paths`` are absolute."""

    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return self.load_reduced(index, None)

    def load_reduced(self, index: int, draft: DraftRequest | None) -> Image.Image:
        """:meth:`load`, a JPEG-named file decoded at the reduced size ``draft`` allows (the fingerprint records
        it: :func:`reduces_jpeg`)."""
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
        return decode_image_bytes(data, str(path), draft if path.suffix.lower() in JPEG_SUFFIXES else None)

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    @property
    def conversion(self) -> str:
        return FILE_IMAGE_CONVERSION


def source_conversion(source: ImageSource) -> str:
    """How ``source`` turns pixels into 8-bit RGB (its ``conversion``; sources without one convert like arrays)."""
    return str(getattr(source, "conversion", DEFAULT_IMAGE_CONVERSION))


def load_image(source: ImageSource, index: int, draft: DraftRequest | None = None) -> Image.Image:
    """``source.load(index)``, decoded at reduced size where ``draft`` is given and the source can (JPEG files)."""
    reduced = getattr(source, "load_reduced", None)
    return reduced(index, draft) if draft is not None and reduced is not None else source.load(index)


def reduces_jpeg(source: ImageSource) -> bool:
    """Whether :func:`load_image` with a draft request may decode some of ``source``'s images at reduced size."""
    return hasattr(source, "load_reduced") and any(p.suffix.lower() in JPEG_SUFFIXES for p in source_paths(source))


def source_paths(source: ImageSource) -> tuple[Path, ...]:
    """The files ``source`` reads its images from, in order (none for in-memory sources)."""
    return tuple(getattr(source, "paths", ()))


@dataclass(frozen=True)
class Split:
    """One split: sample ids (unique, stable), labels and the images."""

    name: str
    ids: tuple[str, ...]
    labels: np.ndarray
    source: ImageSource
    # Per-sample text metadata, one value per id (``fmprobe.tasks.GROUP``: the patient or lesion; ``STUDY``; any
    # other column an adapter knows). Stored in the feature file, so probing on another machine still has it.
    metadata: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.labels) or len(self.ids) != len(self.source):
            raise DatasetError(
                f"split {self.name!r}: {len(self.ids)} ids, {len(self.labels)} labels and {len(self.source)} images "
                "disagree; the dataset listing is inconsistent."
            )
        for key, values in self.metadata.items():
            if not re.fullmatch(METADATA_KEY, key) or len(values) != len(self.ids):
                raise DatasetError(
                    f"split {self.name!r}: metadata {key!r} has {len(values)} values for {len(self.ids)} samples (keys "
                    f"match {METADATA_KEY}, one value per sample); the adapter built it wrong."
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
    # How raw pixels became 8-bit RGB (e.g. how a DICOM was windowed): part of the feature cache's key. Left
    # empty it is the splits' sources' own (``FileSource`` applies EXIF orientation, ``ArraySource`` cannot).
    image_conversion: str = ""
    # Source-specific facts for the user (CheXpert's competition labels, CBIS-DDSM's layout); never a cache key.
    extra: dict[str, object] = field(default_factory=dict)
    # How results on this dataset are evaluated beyond the task's defaults (JSON-serialisable; e.g. named label
    # subsets to average over, the unit predictions are aggregated to). Stored in the feature file, read by probing.
    evaluation: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASK_TYPES:
            raise DatasetError(f"dataset {self.name!r}: unknown task type {self.task!r}; one of {TASK_TYPES}.")
        if not self.primary_metric:
            object.__setattr__(self, "primary_metric", PRIMARY_METRIC[self.task])
        if not self.image_conversion:
            conversions = sorted({source_conversion(s.source) for s in self.splits.values()})
            object.__setattr__(self, "image_conversion", "+".join(conversions) or DEFAULT_IMAGE_CONVERSION)

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


def file_bytes_digest(paths: Sequence[Path]) -> str:
    """Digest of every byte of every file (in order): catches pixels replaced with size and mtime kept, at the
    cost of reading the whole dataset (``?verify_content=1``). Unreadable files contribute a marker."""
    h = hashlib.sha256()
    for path in paths:
        try:
            hash_file(h, path)
            h.update(b"\0")
        except OSError:
            h.update(b"\0missing\0")
    return h.hexdigest()[:20]


def hash_file(h: hashlib._Hash, path: Path) -> None:
    """Feed every byte of ``path`` to ``h``, 4 MiB at a time."""
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)


def with_verified_content(dataset: Dataset) -> Dataset:
    """``dataset`` with the bytes of its image files hashed into its digest (unchanged when it has no files)."""
    paths = [p for split in dataset.splits.values() for p in source_paths(split.source)]
    if not paths:
        return dataset
    return replace(dataset, content_digest=digest_parts(dataset.content_digest, "content", file_bytes_digest(paths)))


def subset_split(split: Split, limit: int, seed: int = 0) -> Split:
    """A seeded random ``limit``-sample subset of a split (quick looks, tests); original order is preserved."""
    if limit >= len(split):
        return split
    index = np.sort(np.random.default_rng(seed).choice(len(split), size=limit, replace=False))
    source = _IndexedSource(split.source, tuple(int(i) for i in index))
    return Split(split.name, tuple(split.ids[i] for i in index), split.labels[index], source, take_metadata(split.metadata, index))


UNKNOWN_METADATA = ("", "unknown")  # spellings of "not recorded" in the published tables; stored as ""


@functools.lru_cache(maxsize=1 << 16)  # a column has few distinct values, a table many rows
def metadata_value(text: str) -> str:
    """A published table's cell as a paper adapter stores it: stripped and lower-case (``Male`` and ``male`` are one
    subgroup), a whole number without its ``.0`` (``55.0`` -> ``55``, as pandas writes ages), and ``""`` for unknown."""
    value = text.strip().lower()
    value = re.sub(r"^(-?\d+)\.0*$", r"\1", value)
    return "" if value in UNKNOWN_METADATA else value


def take_metadata(metadata: dict[str, Sequence[str]], index: Sequence[int] | np.ndarray) -> dict[str, tuple[str, ...]]:
    """The metadata of the samples at ``index``, in that order."""
    return {key: tuple(str(values[i]) for i in index) for key, values in metadata.items()}


@dataclass(frozen=True)
class _IndexedSource:
    parent: ImageSource
    index: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.index)

    def load(self, i: int) -> Image.Image:
        return self.parent.load(self.index[i])

    def load_reduced(self, i: int, draft: DraftRequest | None) -> Image.Image:
        return load_image(self.parent, self.index[i], draft)

    def describe(self, i: int) -> str:
        return self.parent.describe(self.index[i])

    @property
    def conversion(self) -> str:
        return source_conversion(self.parent)

    @property
    def paths(self) -> tuple[Path, ...]:
        parent = source_paths(self.parent)
        return tuple(parent[i] for i in self.index) if parent else ()


def duplicated(values: Sequence[str], limit: int = 3) -> list[str]:
    """The first ``limit`` values (sorted) that occur more than once, for "duplicate id" errors."""
    return sorted(v for v, n in Counter(values).items() if n > 1)[:limit]


def not_found(path: Path, what: str) -> DatasetError:
    """A missing file or folder of a published layout, with similarly named entries beside it (``Train.csv``)."""
    near = closest(path.name, os.listdir(path.parent)) if path.parent.is_dir() else []
    hint = f" Found similar: {', '.join(near)}." if near else ""
    return DatasetError(f"{path} not found: {what}.{hint}")

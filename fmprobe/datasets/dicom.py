"""DICOM images as 8-bit RGB: an ``ImageSource`` over ``.dcm`` files (pydicom).

Backbones take 8-bit images, so every DICOM is converted the same documented way, and the way is recorded in
the feature cache's fingerprint through ``Dataset.image_conversion`` (:func:`conversion_tag`):

1. the stored values (8-16 bit, signed or unsigned) go through the modality LUT (``RescaleSlope`` /
   ``RescaleIntercept``, or a Modality LUT Sequence);
2. they are windowed to 0-255 with one of the modes in :data:`WINDOW_MODES`:

   - ``dicom`` (default): the file's first ``WindowCenter``/``WindowWidth`` pair (``VOILUTFunction`` LINEAR,
     LINEAR_EXACT or SIGMOID, as in DICOM PS3.3 C.11.2.1.2); files without one fall back to ``minmax``;
   - ``minmax``: the image's own minimum to maximum;
   - ``percentile``: the image's ``percentiles`` (default 0.5 and 99.5) to 0 and 255, clipping outliers such
     as burnt-in labels;
3. ``MONOCHROME1`` images (high values are dark) are inverted so that, as in ``MONOCHROME2``, dense tissue is bright;
4. grey is replicated to RGB. 8-bit colour DICOMs (RGB, or YBR converted by pydicom) are passed through.

Multi-frame and palette-colour files are refused with an :class:`~fmprobe.errors.ImageError` naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fmprobe.errors import DatasetError, ImageError

WINDOW_MODES: tuple[str, ...] = ("dicom", "minmax", "percentile")
DEFAULT_PERCENTILES: tuple[float, float] = (0.5, 99.5)
CONVERSION_VERSION = "v1"  # bump when the arithmetic below changes: cached features then no longer match


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom is installed with fmprobe's DICOM support
        raise DatasetError(
            "reading DICOM files needs pydicom: `pip install pydicom` (3.x), or use a JPEG/PNG conversion of the data."
        ) from None
    return pydicom


def conversion_tag(window: str = "dicom", percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> str:
    """The short string recorded in ``Dataset.image_conversion`` (and so in the cache fingerprint)."""
    check_window(window, percentiles)
    tag = f"dicom-window:{CONVERSION_VERSION}:{window}"
    return tag + (f":{percentiles[0]:g}-{percentiles[1]:g}" if window == "percentile" else "")


def check_window(window: str, percentiles: tuple[float, float] = DEFAULT_PERCENTILES) -> None:
    if window not in WINDOW_MODES:
        raise DatasetError(f"DICOM window mode {window!r}: use one of {', '.join(WINDOW_MODES)}.")
    lo, hi = percentiles
    if not 0 <= lo < hi <= 100:
        raise DatasetError(f"DICOM percentiles {percentiles}: need 0 <= low < high <= 100, e.g. 0.5,99.5.")


def parse_percentiles(text: str) -> tuple[float, float]:
    """``"1,99"`` -> ``(1.0, 99.0)`` with an error that shows the expected form."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise DatasetError(f"percentiles={text!r}: write two numbers, low,high (e.g. percentiles=0.5,99.5).") from None
    check_window("percentile", (lo, hi))
    return lo, hi


def read_header(path: Path, tags: tuple[str, ...] = ("SeriesDescription", "Rows", "Columns")) -> Any:
    """Only the header tags named (no pixel data): cheap enough to classify thousands of files."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(tags))
    except FileNotFoundError:
        raise ImageError(f"{path}: DICOM file not found.") from None
    except Exception as err:  # pydicom raises InvalidDicomError, OSError, struct/value errors on damaged headers
        raise ImageError(f"{path}: cannot read the DICOM header ({type(err).__name__}: {err}).") from err


def _first(value: Any) -> float | None:
    """The first WindowCenter/WindowWidth value (several are alternatives; the first is the default), or None."""
    if value is not None and not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        value = value[0] if len(value) else None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None  # absent or empty: no usable window


def window_to_unit(
    values: np.ndarray, ds: Any, window: str, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> np.ndarray:
    """Map modality values to [0, 1] (float32) with the chosen window mode."""
    x = values.astype(np.float32, copy=False)
    center, width = (_first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))) if window == "dicom" else (None, None)
    if center is not None and width is not None:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        if function == "SIGMOID" and width > 0:
            return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
        if function == "LINEAR_EXACT" and width > 0:
            return np.clip((x - center) / width + 0.5, 0.0, 1.0)
        if width > 1:  # LINEAR (PS3.3 C.11.2.1.2.1)
            return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)
        return (x > center - 0.5).astype(np.float32)  # width 1 is a threshold
    if window == "percentile":
        lo, hi = (float(v) for v in np.percentile(x, percentiles))
    else:  # minmax, and dicom without a window in the file
        lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def dicom_to_image(
    path: Path, window: str = "dicom", percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> Image.Image:
    """Read one DICOM file and return the 8-bit RGB image (see the module docstring for the steps)."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
    except FileNotFoundError:
        raise ImageError(
            f"{path}: DICOM file not found. Restore it, or run with --on-error skip to leave it out."
        ) from None
    except InvalidDicomError as err:
        raise ImageError(f"{path}: not a DICOM file ({err}). Re-download it.") from err
    except Exception as err:
        raise ImageError(f"{path}: cannot read DICOM file ({type(err).__name__}: {err}). Re-download it.") from err
    if "PixelData" not in ds:
        raise ImageError(f"{path}: DICOM file has no pixel data (a report or structured document, not an image).")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise ImageError(f"{path}: multi-frame DICOM ({frames} frames); fmprobe reads single-frame images only.")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    try:
        array = ds.pixel_array
    except Exception as err:  # missing decoder for a compressed transfer syntax, truncated pixel data, ...
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", syntax)
        raise ImageError(
            f"{path}: cannot decode the DICOM pixel data (transfer syntax {syntax_name}; {type(err).__name__}: {err}). "
            "Compressed DICOMs need a pydicom pixel decoder plugin for that syntax (e.g. pylibjpeg or "
            "python-gdcm); or the file is truncated: re-download it."
        ) from err
    if photometric == "PALETTE COLOR":
        raise ImageError(f"{path}: palette-colour DICOM; convert it to RGB or greyscale first.")
    if array.ndim == 3:  # colour: pydicom returns RGB (YBR converted)
        if array.dtype == np.uint8:
            return Image.fromarray(np.ascontiguousarray(array), "RGB")
        unit = window_to_unit(array, ds, "minmax")
        return Image.fromarray(np.round(unit * 255).astype(np.uint8), "RGB")
    if array.ndim != 2:
        raise ImageError(f"{path}: DICOM pixel array has shape {array.shape}; expected one 2-D image.")
    try:
        values = apply_modality_lut(array, ds)
    except Exception as err:
        raise ImageError(f"{path}: cannot apply the DICOM modality LUT / rescale ({err}).") from err
    unit = window_to_unit(np.asarray(values), ds, window, percentiles)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    grey = np.round(unit * 255.0).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


@dataclass(frozen=True)
class DicomSource:
    """Images stored as DICOM files, converted to 8-bit RGB on load; ``paths`` are absolute."""

    paths: tuple[Path, ...]
    window: str = "dicom"
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES

    def __post_init__(self) -> None:
        check_window(self.window, self.percentiles)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return dicom_to_image(self.paths[index], self.window, self.percentiles)

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    @property
    def conversion(self) -> str:
        return conversion_tag(self.window, self.percentiles)

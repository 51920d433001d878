"""Reduced-size JPEG decoding (``Image.draft``): pixels within the resize's tolerance of a full decode, and a
decode mode in the fingerprint only where it is used (old keys stay valid)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from _helpers import write_manifest
from PIL import Image, ImageFilter

from fmprobe.backbones.base import Preprocess
from fmprobe.backbones.preprocess import ImageTransform
from fmprobe.datasets.base import decode_image_bytes
from fmprobe.errors import FmprobeError
from fmprobe.extract import JPEG_DRAFT, extract_features, plan_extraction

# uint8 levels: a drafted decode (DCT scaling by 1/2..1/8, then the same antialiased resize) vs a full decode.
# Measured 5 (max) and 0.57 (mean) on a 1024x768 photo-like image at 224; bicubic resize rounding alone moves a
# pixel by 1-2 levels, and DCT scaling filters once more before the resize filters again.
MAX_LEVELS, MEAN_LEVELS = 8, 1.0
TINY = dict(backbone="efficientnet_lite0_imagenet:random", resolution=32, batch_size=8, num_workers=0, dtype="fp32", progress=False)


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth colour regions plus fine texture: what camera photos look like to a DCT."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    noise = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(1.5))
    return Image.blend(base, noise, 0.3)


def _jpeg(width: int = 1024, height: int = 768, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    _photo(width, height, seed).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(
    "config",
    [
        Preprocess(size=224, crop_pct=0.875),
        Preprocess(size=224, crop_pct=1.0, interpolation="bilinear", resize_mode="squash"),
        Preprocess(size=160, resize_mode="longest_pad"),
    ],
    ids=["center_crop", "squash", "longest_pad"],
)
def test_drafted_pixels_match_a_full_decode_within_the_resize_tolerance(config: Preprocess) -> None:
    transform, data = ImageTransform(config), _jpeg()
    drafted_image = decode_image_bytes(data, "x.jpg", transform.draft_request)
    assert drafted_image.width < 1024  # really decoded smaller ...
    request = transform.draft_request(1024, 768)
    assert request is not None and drafted_image.width >= request[0] and drafted_image.height >= request[1]  # ... never below
    full, full_valid = transform.to_uint8(decode_image_bytes(data, "x.jpg"))
    drafted, drafted_valid = transform.to_uint8(drafted_image)
    assert full_valid == drafted_valid
    diff = (full.int() - drafted.int()).abs()
    assert int(diff.max()) <= MAX_LEVELS and float(diff.float().mean()) <= MEAN_LEVELS


def test_no_draft_where_the_resize_would_not_shrink_by_two() -> None:
    transform = ImageTransform(Preprocess(size=224, crop_pct=0.875))
    assert transform.draft_request(400, 300) is None  # 300 -> 256: a factor 1.17
    data = _jpeg(400, 300)
    assert decode_image_bytes(data, "x.jpg", transform.draft_request).size == (400, 300)


def _jpeg_manifest(folder: Path, suffix: str = ".jpg", n: int = 12) -> str:
    rows = []
    for i in range(n):
        path = folder / "imgs" / f"img_{i:03d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        _photo(256, 192, seed=i).save(path, "JPEG" if suffix == ".jpg" else "PNG", quality=90)
        rows.append([f"imgs/{path.name}", ["a", "b"][i % 2], ["train", "val", "test"][i % 3]])
    return f"csv:{write_manifest(folder / 'm.csv', ['path', 'label', 'split'], rows)}"


def test_the_fingerprint_records_the_decode_mode_only_where_jpeg_files_are_drafted(tmp_path: Path) -> None:
    jpegs, pngs = _jpeg_manifest(tmp_path / "j"), _jpeg_manifest(tmp_path / "p", ".png")
    opts = {k: v for k, v in TINY.items() if k != "backbone"}
    drafted = plan_extraction(jpegs, TINY["backbone"], out=tmp_path / "f", **opts)
    full = plan_extraction(jpegs, TINY["backbone"], out=tmp_path / "f", decode="full", **opts)
    png = plan_extraction(pngs, TINY["backbone"], out=tmp_path / "f", **opts)
    assert drafted.preprocess["decode"] == JPEG_DRAFT and "decode" not in full.preprocess and "decode" not in png.preprocess
    assert drafted.key != full.key  # draft and full decodes never share a cache file
    assert full.preprocess == full.spec.preprocess.at(32).to_dict()  # the record files written before had: same key


def test_drafted_extraction_features_are_close_to_full_decode_features(tmp_path: Path) -> None:
    spec = _jpeg_manifest(tmp_path)
    opts = {k: v for k, v in TINY.items() if k != "backbone"}
    results = {mode: extract_features(spec, TINY["backbone"], out=tmp_path / mode, decode=mode, **opts) for mode in ("auto", "full")}
    from fmprobe.store import FeatureFile

    a, b = (FeatureFile(results[m].path).load("train").features for m in ("auto", "full"))
    assert a.shape == b.shape and not np.array_equal(a, b)  # really decoded differently ...
    assert np.abs(a - b).max() <= 0.05 * np.abs(b).max()  # ... to within a few uint8 levels' effect


def test_an_unknown_decode_mode_is_refused_naming_the_option(tmp_path: Path) -> None:
    with pytest.raises(FmprobeError, match="--decode 'dct'"):
        plan_extraction("demo:2", "efficientnet_lite0_imagenet:random", out=tmp_path, decode="dct")

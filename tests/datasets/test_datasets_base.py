"""Dataset types and image decoding: formats that would need a guess are refused, naming the file."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from _helpers import write_png

from fmprobe.datasets import load_dataset
from fmprobe.datasets.base import MAX_PIXELS_ENV, ArraySource, Dataset, FileSource, Split, to_rgb
from fmprobe.errors import DatasetError, ImageError


def test_image_format_errors_name_the_file(tmp_path: Path) -> None:
    cases = {
        "sixteen.png": (np.full((8, 8), 4000, np.uint16), "16-bit"),
        "rgba.png": (np.zeros((8, 8, 4), np.uint8), "alpha channel"),
    }
    for name, (array, message) in cases.items():
        path = write_png(tmp_path / name, array)
        with pytest.raises(ImageError, match=message) as info:
            FileSource((path,)).load(0)
        assert name in str(info.value)
    from PIL import Image

    Image.new("P", (8, 8)).save(tmp_path / "palette.png")
    with pytest.raises(ImageError, match="palette"):
        FileSource((tmp_path / "palette.png",)).load(0)
    good = write_png(tmp_path / "good.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:40])
    with pytest.raises(ImageError, match=r"trunc\.png: cannot decode"):
        FileSource((tmp_path / "trunc.png",)).load(0)
    with pytest.raises(ImageError, match="not found"):
        FileSource((tmp_path / "nope.png",)).load(0)
    assert to_rgb(Image.new("L", (4, 4)), "x").mode == "RGB"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png16(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB/RGBA PNG, written by hand: PIL cannot write one (it opens them as 8-bit RGB)."""
    height, width, channels = array.shape
    rows = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, {3: 2, 4: 6}[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def tiff16(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel uncompressed RGB TIFF (little-endian, one strip), written by hand."""
    height, width, channels = array.shape
    pixels = array.astype("<u2").tobytes()
    bits_at = 8 + 2 + 10 * 12 + 4
    data_at = bits_at + 2 * channels

    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII" if kind == 4 or count > 2 else "<HHIHxx", tag, kind, count, value)

    entries = [entry(256, 4, 1, width), entry(257, 4, 1, height), entry(258, 3, channels, bits_at), entry(259, 3, 1, 1),
               entry(262, 3, 1, 2), entry(273, 4, 1, data_at), entry(277, 3, 1, channels), entry(278, 4, 1, height),
               entry(279, 4, 1, len(pixels)), entry(284, 3, 1, 1)]  # fmt: skip
    bits = struct.pack(f"<{channels}H", *([16] * channels))
    return b"II*\0" + struct.pack("<IH", 8, len(entries)) + b"".join(entries) + b"\0\0\0\0" + bits + pixels


@pytest.mark.parametrize("name,encode", [("rgb16.png", png16), ("rgb16.tiff", tiff16)])
def test_sixteen_bit_rgb_is_refused_not_cut_to_its_high_byte(tmp_path: Path, name: str, encode: object) -> None:
    twelve_bit = np.full((6, 5, 3), 4000, np.uint16)  # PIL would decode 4000 as 15
    path = tmp_path / name
    path.write_bytes(encode(twelve_bit))  # type: ignore[operator]
    with pytest.raises(ImageError, match=r"16-bit image \((PNG bit depth 16|TIFF BitsPerSample \(16, 16, 16\)), opened as PIL mode RGB") as info:
        FileSource((path,)).load(0)
    assert name in str(info.value) and "window it to 8 bits" in str(info.value)
    rgba = tmp_path / "rgba16.png"
    rgba.write_bytes(png16(np.full((4, 4, 4), 4000, np.uint16)))
    with pytest.raises(ImageError, match=r"rgba16\.png: 16-bit image \(PNG bit depth 16, opened as PIL mode RGBA"):
        FileSource((rgba,)).load(0)


def test_exif_orientation_is_applied_and_keyed(tmp_path: Path) -> None:
    from PIL import Image

    array = np.zeros((4, 6, 3), np.uint8)  # 6 wide, 4 high; the top-left pixel marks the corner
    array[0, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: displayed turned 90 degrees clockwise
    path = tmp_path / "phone.jpg"
    Image.fromarray(array).save(path, exif=exif, quality=100)
    image = FileSource((path,)).load(0)
    assert image.size == (4, 6) and np.asarray(image)[0, -1].min() > 200  # upright: the marked corner is top-right
    assert FileSource((path,)).conversion == "pil-rgb8-exif"
    arrays = ArraySource(np.zeros((2, 4, 4), np.uint8), "a")
    split = Split("train", ("0", "1"), np.zeros(2, np.int64), arrays)
    array_dataset = Dataset("a", "a", "binary", ("0", "1"), {"train": split}, "d")
    assert array_dataset.image_conversion == "pil-rgb8"  # arrays carry no EXIF: their cache keys stay as they were


def test_a_decompression_bomb_names_the_file_and_the_limit_to_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    path = write_png(tmp_path / "huge.png", np.zeros((30, 30, 3), np.uint8))  # 900 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses above twice its limit
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    with pytest.raises(ImageError, match=rf"huge\.png: image too large to decode .*{MAX_PIXELS_ENV}=900 \(pixels; 0 = no limit\)"):
        FileSource((path,)).load(0)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    assert FileSource((path,)).load(0).size == (30, 30)
    monkeypatch.setenv(MAX_PIXELS_ENV, "500")
    with pytest.raises(ImageError, match=rf"huge\.png: .*30x30 = 900 pixels, {MAX_PIXELS_ENV}=500\).*downscale"):
        FileSource((path,)).load(0)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(DatasetError, match=rf"{MAX_PIXELS_ENV}='lots': give a number of pixels"):
        FileSource((path,)).load(0)


def test_verify_content_notices_pixels_swapped_with_size_and_mtime_kept(tmp_path: Path) -> None:
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(10):  # BMP is uncompressed: other pixels, same size in bytes
            Image.new("RGB", (8, 8), (20 * i, 100 * (label == "b"), 0)).save(tmp_path / "data" / label / f"{i}.bmp")
    spec = f"folder:{tmp_path / 'data'}"
    fast, verified = load_dataset(spec).content_digest, load_dataset(spec + "?verify_content=1").content_digest
    victim = tmp_path / "data" / "a" / "0.bmp"
    stamp = victim.stat()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(victim)  # then the old mtime back
    os.utime(victim, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert victim.stat().st_size == stamp.st_size
    assert load_dataset(spec).content_digest == fast  # the fast key cannot see it (documented)
    assert load_dataset(spec + "?verify_content=1").content_digest != verified

"""Dataset types and image decoding: formats that would need a guess are refused, naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _helpers import write_png

from fmprobe.datasets.base import FileSource, to_rgb
from fmprobe.errors import ImageError


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

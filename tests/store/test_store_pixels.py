"""The pixel cache: present only once finished, read back exactly, keyed by dataset content and geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fmprobe.store.pixels import PixelCache

GEOMETRY = {"size": 8, "interpolation": "bicubic", "crop_pct": 1.0}


def test_pixels_count_only_once_finished_and_read_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)
    cache = PixelCache(tmp_path, "digest", GEOMETRY, n_images=4, size=8)
    cache.open_for_writing()
    cache.write(np.array([0, 1, 3]), pixels, np.array([[8, 8], [8, 6], [5, 8]]))
    assert not cache.complete, "a cache cut short by a kill must not be read"
    cache.finish({2: "c.png: cannot decode"})
    assert cache.complete and not list(tmp_path.glob("*.tmp"))
    again = PixelCache(tmp_path, "digest", GEOMETRY, n_images=4, size=8)
    again.open_for_reading()
    assert np.array_equal(again.pixels[[0, 1, 3]], pixels) and again.sizes[1].tolist() == [8, 6]
    assert again.errors == {2: "c.png: cannot decode"}


def test_other_content_or_geometry_is_another_cache(tmp_path: Path) -> None:
    base = PixelCache(tmp_path, "digest", GEOMETRY, 4, 8).pixels_path
    assert PixelCache(tmp_path, "other", GEOMETRY, 4, 8).pixels_path != base
    assert PixelCache(tmp_path, "digest", {**GEOMETRY, "crop_pct": 0.875}, 4, 8).pixels_path != base


def test_a_cache_of_another_shape_is_refused(tmp_path: Path) -> None:
    cache = PixelCache(tmp_path, "digest", GEOMETRY, 2, 8)
    cache.open_for_writing()
    cache.finish({})
    with pytest.raises(ValueError, match="does not fit"):
        PixelCache(tmp_path, "digest", GEOMETRY, 3, 8).open_for_reading()

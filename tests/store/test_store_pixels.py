"""The pixel cache: present only once finished, read back exactly, keyed by dataset content and geometry; one
writer at a time, checksummed, a damaged cache never read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fmprobe.store.pixels import PixelCache

GEOMETRY = {"size": 8, "interpolation": "bicubic", "crop_pct": 1.0}


def test_pixels_count_only_once_finished_and_read_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)
    cache = PixelCache(tmp_path, "digest", GEOMETRY, n_images=4, size=8)
    assert cache.open_for_writing()
    cache.write(np.array([0, 1, 3]), pixels, np.array([[8, 8], [8, 6], [5, 8]]))
    assert not cache.complete, "a cache cut short by a kill must not be read"
    cache.finish({2: "c.png: cannot decode"})
    assert cache.complete and not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.lock"))
    again = PixelCache(tmp_path, "digest", GEOMETRY, n_images=4, size=8)
    assert again.open_for_reading()
    assert np.array_equal(again.pixels[[0, 1, 3]], pixels) and again.sizes[1].tolist() == [8, 6]
    assert again.errors == {2: "c.png: cannot decode"}


def test_other_content_or_geometry_is_another_cache(tmp_path: Path) -> None:
    base = PixelCache(tmp_path, "digest", GEOMETRY, 4, 8).pixels_path
    assert PixelCache(tmp_path, "other", GEOMETRY, 4, 8).pixels_path != base
    assert PixelCache(tmp_path, "digest", {**GEOMETRY, "crop_pct": 0.875}, 4, 8).pixels_path != base


def _finished(folder: Path, n: int = 2) -> PixelCache:
    cache = PixelCache(folder, "digest", GEOMETRY, n, 8)
    assert cache.open_for_writing()
    cache.write(np.arange(n), np.full((n, 3, 8, 8), 7, np.uint8), np.full((n, 2), 8))
    cache.finish({})
    return cache


def test_a_cache_of_another_shape_is_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _finished(tmp_path)
    assert not PixelCache(tmp_path, "digest", GEOMETRY, 3, 8).open_for_reading()
    assert "does not fit" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["pixel-byte", "sizes-byte", "marker-json", "old-marker", "truncated"])
def test_a_damaged_cache_is_never_read_and_is_rebuilt(tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    cache = _finished(tmp_path)
    if damage in ("pixel-byte", "sizes-byte"):
        path = cache.pixels_path if damage == "pixel-byte" else cache.sizes_path
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x01  # one flipped bit in the array, past the .npy header
        path.write_bytes(bytes(data))
    elif damage == "marker-json":
        cache.marker.write_text("{not json")
    elif damage == "old-marker":  # the first format: no checksums
        cache.marker.write_text(json.dumps({"errors": {}}))
    else:
        cache.pixels_path.write_bytes(cache.pixels_path.read_bytes()[:100])
    reader = PixelCache(tmp_path, "digest", GEOMETRY, 2, 8)
    assert not reader.open_for_reading() and reader.pixels is None
    assert "is damaged" in capsys.readouterr().err
    _finished(tmp_path)  # rebuilt in place
    assert PixelCache(tmp_path, "digest", GEOMETRY, 2, 8).open_for_reading()


def test_a_second_writer_leaves_the_first_writers_cache_intact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The bug: a second writer unlinked the marker and reopened the memmap w+, zeroing the first's images."""
    first = PixelCache(tmp_path, "digest", GEOMETRY, 2, 8)
    assert first.open_for_writing()
    first.write(np.arange(2), np.full((2, 3, 8, 8), 9, np.uint8), np.full((2, 2), 8))
    second = PixelCache(tmp_path, "digest", GEOMETRY, 2, 8)
    assert not second.open_for_writing()  # the lock is held: it decodes its own images instead
    assert "another process is writing" in capsys.readouterr().err
    assert not PixelCache(tmp_path, "digest", GEOMETRY, 2, 8).open_for_reading()  # not complete, not read
    first.finish({})
    reader = PixelCache(tmp_path, "digest", GEOMETRY, 2, 8)
    assert reader.open_for_reading() and int(reader.pixels.min()) == 9


def test_a_killed_writers_temporary_files_are_removed_by_the_next_writer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = (
        "import os, signal, sys, numpy as np; from pathlib import Path; from fmprobe.store.pixels import PixelCache\n"
        f"c = PixelCache(Path(sys.argv[1]), 'digest', {GEOMETRY!r}, 2, 8); c.open_for_writing()\n"
        "c.write(np.arange(2), np.ones((2, 3, 8, 8), np.uint8), np.ones((2, 2))); os.kill(os.getpid(), signal.SIGKILL)"
    )
    killed = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert len(list(tmp_path.glob(".*.tmp"))) == 2 and not PixelCache(tmp_path, "digest", GEOMETRY, 2, 8).complete
    _finished(tmp_path)
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob("*.lock"))
    assert "removed 2 leftover temporary file(s) of killed fmprobe processes" in capsys.readouterr().err

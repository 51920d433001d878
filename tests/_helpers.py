"""Helpers the tests share (imported as ``from _helpers import ...``; fixtures stay in conftest.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the real data files live in ../shared/data beside the checkout (see README)")
    return path


def write_png(path: Path, array: np.ndarray) -> Path:
    """Save an array as PNG; the mode follows the dtype and channels (uint16 -> 16-bit, 4 channels -> RGBA)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_images(folder: Path, labels: list[str], seed: int = 0, size: int = 24) -> list[str]:
    """Write one small RGB PNG per label (class-dependent brightness so features carry signal)."""
    rng = np.random.default_rng(seed)
    names = []
    for i, label in enumerate(labels):
        base = 60 + 40 * (sum(map(ord, label)) % 4)  # stable across processes
        array = np.clip(rng.normal(base, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        name = f"img_{i:04d}.png"
        write_png(folder / name, array)
        names.append(name)
    return names


def write_manifest(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path

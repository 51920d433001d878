"""Shared helpers of the fault battery. It runs at a reduced count in CI; FMPROBE_FAULT_TRIALS=20 runs it in full."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

TRIALS = int(os.environ.get("FMPROBE_FAULT_TRIALS", "2"))
ROOT = Path(__file__).resolve().parents[2]


def arrays(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path) as h5:
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_file(a: Path, b: Path) -> None:
    left, right = arrays(a), arrays(b)
    assert left.keys() == right.keys()
    for name in left:
        assert np.array_equal(left[name], right[name]), name

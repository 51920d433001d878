"""Shared fixtures: offline hubs, a private data folder and user cache, small datasets in each supported layout.

Plain helper functions live in ``_helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _helpers import make_images, write_manifest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on an unreachable hub in tests


@pytest.fixture(autouse=True, scope="session")
def _private_data_root(tmp_path_factory: pytest.TempPathFactory):
    """Generated demo data and the user cache (shape and split caches) land in one per-session folder, never in
    the user's ./data or ~/.cache (set before any module-scoped fixture runs)."""
    base = tmp_path_factory.getbasetemp()
    wanted = {"FMPROBE_DATA": str(base / "data"), "FMPROBE_CACHE": str(base / "user-cache")}
    previous = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    yield
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def small_manifest(tmp_path: Path) -> Path:
    """A 60-image binary manifest with patient groups and no split column."""
    labels = ["benign", "malignant"] * 30
    names = make_images(tmp_path / "imgs", labels)
    rows = [[f"imgs/{n}", lab, f"p{i // 3}"] for i, (n, lab) in enumerate(zip(names, labels))]
    return write_manifest(tmp_path / "manifest.csv", ["path", "label", "group"], rows)

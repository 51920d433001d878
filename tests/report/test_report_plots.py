"""The report's PNGs: drawn off-screen, written atomically, the same bytes for the same numbers."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from fmprobe.report.plots import confusion_chart


def test_confusion_chart_is_reproducible_and_leaves_the_backend_alone(tmp_path: Path) -> None:
    backend = matplotlib.get_backend()
    cm = np.array([[5, 1], [2, 7]])
    a = confusion_chart("d", "best", cm, ["no", "yes"], tmp_path / "a.png")
    b = confusion_chart("d", "best", cm, ["no", "yes"], tmp_path / "b.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temporary file left
    assert matplotlib.get_backend() == backend

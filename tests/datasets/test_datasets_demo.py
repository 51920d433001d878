"""The generated demo data set."""

from __future__ import annotations

import numpy as np

from fmprobe.datasets import load_dataset


def test_demo_is_deterministic_and_grouped() -> None:
    a = load_dataset("demo:12")
    b = load_dataset("demo:12")
    assert a.class_names == ("regular", "irregular_border", "variegated", "reticular")
    assert a.content_digest == b.content_digest and a.num_images == 48
    pixels = np.asarray(a.splits["train"].source.load(0))
    assert pixels.shape == (96, 96, 3) and pixels.std() > 5

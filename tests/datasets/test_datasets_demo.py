"""The generated demo data set."""

from __future__ import annotations

import numpy as np
import pytest

from fmprobe.datasets import demo, load_dataset


def test_demo_is_deterministic_and_grouped() -> None:
    a = load_dataset("demo:12")
    b = load_dataset("demo:12")
    assert a.class_names == ("regular", "irregular_border", "variegated", "reticular")
    assert a.content_digest == b.content_digest and a.num_images == 48
    pixels = np.asarray(a.splits["train"].source.load(0))
    assert pixels.shape == (96, 96, 3) and pixels.std() > 5


def test_an_interrupted_generation_leaves_no_manifest_and_is_completed_later(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = demo.render_lesion

    def dies_after_five(*args: object, **kwargs: object) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(demo, "render_lesion", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("demo:10?seed=7")
    folder = demo.demo_folder(10, 7)
    assert len(list((folder / "images").iterdir())) == 5 and not (folder / "manifest.csv").exists()
    monkeypatch.setattr(demo, "render_lesion", real)
    ds = load_dataset("demo:10?seed=7")  # no manifest yet: generated again, whole
    assert ds.num_images == 40 and (folder / "manifest.csv").exists()
    fresh = demo.generate(folder.parent / "fresh", 10, seed=7).parent
    for name in ("images/lesion_00000.png", "images/lesion_00039.png", "manifest.csv"):
        assert (folder / name).read_bytes() == (fresh / name).read_bytes()

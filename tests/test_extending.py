"""fmprobe's extension promise, end to end: a new backbone family (``_tinynet.py``: one file plus its register
line) and a new dataset source (below: one loader plus one ``SOURCES.add`` line) run through extraction, probing,
fine-tuning with ``partial:1`` and the report with nothing else touched."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from _tinynet import NAME, registered

from fmprobe.backbones import create_backbone
from fmprobe.datasets import SOURCES, Dataset, DatasetSource, OptionSpec, Split
from fmprobe.datasets.base import ArraySource
from fmprobe.extract import extract_features
from fmprobe.finetune import Recipe, RunOptions, run_finetune
from fmprobe.probing import probe_features
from fmprobe.report import write_report
from fmprobe.results import read_results
from fmprobe.tasks import SPLIT_NAMES


def load_stripes(argument: str, spec: str, size: int = 24) -> Dataset:
    """Grey 16x16 images: class 1 has bright stripes, class 0 is flat noise (``size`` images per split)."""
    rng = np.random.default_rng(0)
    splits = {}
    for name in SPLIT_NAMES:
        labels = np.arange(size) % 2
        images = rng.integers(0, 60, (size, 16, 16)).astype(np.uint8)
        images[labels == 1, ::4] += 150
        splits[name] = Split(name, tuple(f"{name}/{i}" for i in range(size)), labels, ArraySource(images, name))
    return Dataset("stripes", spec, "binary", ("flat", "striped"), splits, content_digest=f"stripes{size}")


@pytest.fixture
def extended() -> Iterator[None]:
    source = DatasetSource(
        "stripes", load_stripes, False, "stripes?size=24", "striped vs flat test images",
        (OptionSpec("size", 24, "images per split", int),),
    )  # fmt: skip
    with registered():
        SOURCES.add(source)
        try:
            yield
        finally:
            SOURCES.remove("stripes")


def test_a_new_family_and_source_run_through_the_whole_loop(extended: None, tmp_path: Path) -> None:
    features = extract_features("stripes?size=24", f"{NAME}:random", out=tmp_path / "f", num_workers=0, progress=False)
    assert not features.cache_hit and features.n_images == 72
    run = probe_features([features.path], probes=["logreg"], n_resamples=50, out=tmp_path / "out" / "results", progress=False)
    assert run is not None
    options = RunOptions(out=tmp_path / "out", workers=0, n_resamples=50, progress=False)
    tuned = run_finetune("stripes?size=24", f"{NAME}:random", Recipe("partial:1", epochs=2, batch_size=8, warmup_epochs=0), options)
    assert tuned.epochs_run == 2 and tuned.probe == "finetune:partial:1"
    initial = create_backbone(f"{NAME}:random").model.state_dict()  # the same seeded initialisation
    trained = tuned.model.backbone.state_dict()
    unchanged = {k for k, v in initial.items() if torch.equal(v, trained[k])}
    assert unchanged == {k for k in initial if not k.startswith("blocks.1.")}  # partial:1 trained the last block only
    rows = read_results(tmp_path / "out" / "results")
    primary = rows[rows.is_primary]
    assert set(primary.probe) == {"logreg", "finetune:partial:1"} and set(primary.dataset) == {"stripes"}
    assert set(primary.backbone) == {NAME} and primary["value"].notna().all()
    paths = write_report(tmp_path / "out" / "results", tmp_path / "report", n_resamples=50)
    assert NAME in paths.markdown.read_text()

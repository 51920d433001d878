"""Subgroups on the real ISIC 2019 labels and metadata: stand-in images under the real names, a tiny random
backbone at low resolution, and the n of every sex, age-band and site group checked against pandas on the CSV."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _helpers import shared_file
from _tinynet import NAME, registered
from PIL import Image

from fmprobe.datasets import load_dataset
from fmprobe.datasets.base import digest_parts, subset_split
from fmprobe.extract import extract_features
from fmprobe.probing import probe_features
from fmprobe.results import read_results

pytestmark = pytest.mark.slow
ATTRIBUTES = ("sex", "age_band", "site")


def _stand_in(root: Path) -> Path:
    """The real CSVs beside one small JPEG per class, linked under every real image name."""
    truth = shared_file("isic2019/ISIC_2019_Training_GroundTruth.csv")
    meta = shared_file("isic2019/ISIC_2019_Training_Metadata.csv")
    images = root / "ISIC_2019_Training_Input"
    images.mkdir(parents=True)
    for csv in (truth, meta):
        os.symlink(csv, root / csv.name)
    gt = pd.read_csv(truth)
    classes = gt.drop(columns="image").to_numpy().argmax(axis=1)
    for c in range(9):
        pixels = np.full((16, 16, 3), 20 + 25 * c, dtype=np.uint8)
        Image.fromarray(pixels).save(images / f".class{c}.jpg")
    for name, c in zip(gt["image"], classes, strict=True):
        os.symlink(images / f".class{c}.jpg", images / f"{name}.jpg")
    return root


def _expected(test_ids: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Per attribute, value -> test images, counted by pandas on the metadata CSV (values lower-case; blanks and
    'unknown' are not a group; age bands [40, 60, 80))."""
    meta = pd.read_csv(shared_file("isic2019/ISIC_2019_Training_Metadata.csv")).set_index("image").loc[list(test_ids)]
    text = {k: meta[c].astype("string").str.strip().str.lower() for k, c in (("sex", "sex"), ("site", "anatom_site_general"))}
    bands = pd.cut(meta["age_approx"], [-np.inf, 40, 60, 80, np.inf], right=False, labels=["<40", "40–60", "60–80", "≥80"])
    out = {k: v[v.notna() & (v != "") & (v != "unknown")].value_counts().to_dict() for k, v in text.items()}
    out["age_band"] = bands.value_counts().to_dict()
    return {k: {str(v): int(n) for v, n in counts.items() if n} for k, counts in out.items()}


def test_isic_subgroup_rows_have_the_csv_counts(tmp_path: Path) -> None:
    full = load_dataset(f"isic2019:{_stand_in(tmp_path / 'isic')}")
    test = full.splits["test"]
    if not {"sex", "age", "site"} <= set(test.metadata):
        pytest.skip("the isic2019 adapter does not expose sex/age/site metadata yet (issue 15's dataset part)")
    splits = {name: split if name == "test" else subset_split(split, 200) for name, split in full.splits.items()}
    dataset = replace(full, splits=splits, content_digest=digest_parts(full.content_digest, "small train/val"))
    with registered():
        extracted = extract_features(dataset, f"{NAME}:random", resolution=16, out=tmp_path / "f", num_workers=0,
                                     progress=False)  # fmt: skip
    out = tmp_path / "results"
    probe_features([extracted.path], probes=["logreg"], n_resamples=20, subgroups=list(ATTRIBUTES), out=out,
                   progress=False)  # fmt: skip
    df = read_results(out)
    primary = df[df.is_primary]
    for attribute, counts in _expected(test.ids).items():
        rows = primary[primary.subgroup.str.startswith(f"{attribute}=")]
        got = dict(zip(rows.subgroup.str.removeprefix(f"{attribute}="), rows.n_test.astype(int), strict=True))
        assert got == counts, attribute
        summary = df[df.subgroup == attribute]
        assert set(summary.metric) == {"worst[balanced_accuracy]", "gap[balanced_accuracy]"}
    assert sum(_expected(test.ids)["sex"].values()) < len(test.ids)  # some test images have no recorded sex

"""Embedding maps (fmprobe/report/embedding.py): a 2-D map per backbone from the feature cache, train and test
marked, coloured by class; a backbone whose feature file is not reachable is named, not an error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fmprobe.probing import probe_features
from fmprobe.report import write_report
from fmprobe.report.embedding import MAX_POINTS, embed_2d, subsample
from fmprobe.store import Fingerprint, SplitLayout, write_feature_file
from fmprobe.store.journal import Batch


def _features(path: Path, backbone: str, separation: float, seed: int, n: int = 90, d: int = 12) -> Path:
    """A feature file of a 3-class dataset whose classes lie ``separation`` apart in the first dimensions."""
    rng = np.random.default_rng(seed)
    layouts, batches = {}, []
    for split, size in {"train": n, "val": n // 2, "test": n // 2}.items():
        labels = np.arange(size) % 3
        x = rng.normal(size=(size, d)).astype(np.float16)
        x[:, :3] += separation * np.eye(3, dtype=np.float16)[labels]
        layouts[split] = SplitLayout(tuple(f"{split}/{i}" for i in range(size)), labels)
        batches.append(Batch(split, 0, size, {}, {"pooled": x}))
    fp = Fingerprint("mapset", "dig", backbone, "sha256:x", {}, 32, ("pooled",), "fp32", "float16")
    attrs = {"fingerprint": fp.to_json(), "key": fp.key, "schema_version": 1, "task": "multiclass",
             "class_names": json.dumps(["a", "b", "c"]), "readouts": json.dumps(["pooled"]),
             "primary_metric": "balanced_accuracy"}  # fmt: skip
    write_feature_file(path, attrs, layouts, ("pooled",), {"pooled": d}, "float16", batches, {})
    return path


@pytest.fixture(scope="module")
def probed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    d = tmp_path_factory.mktemp("maps")
    files = [_features(d / "good.h5", "good_net", 4.0, 0), _features(d / "weak.h5", "weak_net", 0.5, 1)]
    probe_features(files, probes=["logreg"], train_fractions=[1.0], repeats=1, out=d / "results", n_resamples=50,
                   progress=False)  # fmt: skip
    return d / "results", files


def test_subsample_keeps_every_split_and_class_in_proportion() -> None:
    groups = np.array(["train0"] * 6000 + ["train1"] * 3000 + ["test0"] * 900 + ["test1"] * 100)
    keep = subsample(groups, MAX_POINTS, seed=0)
    counts = {g: int((groups[keep] == g).sum()) for g in np.unique(groups)}
    assert abs(len(keep) - MAX_POINTS) <= 4 and np.all(np.diff(keep) > 0)
    assert counts == {"train0": 1200, "train1": 600, "test0": 180, "test1": 20}
    assert np.array_equal(keep, subsample(groups, MAX_POINTS, seed=0))  # seeded


def test_the_map_separates_separable_classes_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(150) % 3
    x = rng.normal(size=(150, 64)) + 8 * np.eye(3)[y].repeat(64 // 3 + 1, axis=1)[:, :64]
    xy = embed_2d(x, "tsne", seed=0)
    assert xy.shape == (150, 2) and np.array_equal(xy, embed_2d(x, "tsne", seed=0))
    centres = np.array([xy[y == k].mean(axis=0) for k in range(3)])
    spread = max(np.linalg.norm(xy[y == k] - centres[k], axis=1).mean() for k in range(3))
    gaps = [np.linalg.norm(centres[i] - centres[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread  # three clusters, not one cloud


def test_the_report_maps_every_backbone_and_names_an_unreachable_feature_file(
    probed: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    results, files = probed
    paths = write_report(results, tmp_path / "report", n_resamples=50)
    md = paths.markdown.read_text()
    section = md[md.index("### Embedding maps") :]
    assert "t-SNE of each backbone's features" in section and "No map for" not in section
    assert re.search(r"!\[embedding maps mapset\]\(plots/embedding_mapset\.png\)", section)
    assert {"embedding_mapset.png", "embedding_mapset.svg"} <= {p.name for p in paths.plots}
    files[1].rename(files[1].with_suffix(".moved"))  # results read on another machine: one cache not here
    try:
        md = write_report(results, tmp_path / "again", n_resamples=50).markdown.read_text()
    finally:
        files[1].with_suffix(".moved").rename(files[1])
    section = md[md.index("### Embedding maps") :]
    assert "No map for `weak_net`: feature file" in section and "is not reachable on this machine" in section
    assert "plots/embedding_mapset.png" in section  # the reachable backbone is still mapped


def test_repeated_and_constant_features_never_reach_barnes_hut() -> None:
    """Repeated vectors crash scikit-learn's Barnes-Hut t-SNE (a segfault, seen on constant features): they are
    mapped once and share their point; too few distinct vectors are no map, said by name."""
    from fmprobe.report.embedding import NoMap, embed_2d

    distinct = np.random.default_rng(0).normal(size=(60, 8))
    xy = embed_2d(np.repeat(distinct, 3, axis=0))
    assert xy.shape == (180, 2) and np.allclose(xy[0::3], xy[1::3]) and np.allclose(xy[0::3], xy[2::3])
    with pytest.raises(NoMap, match="only 1 distinct feature vector"):
        embed_2d(np.zeros((40, 8)))

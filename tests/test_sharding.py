"""`--shard I/N` for probing and studies: cells dealt by id, N shards appending into one results folder give
exactly the rows of one process, and a sharded study extracts every feature file once."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import fmprobe.extract
from fmprobe.errors import FmprobeError
from fmprobe.probing import probe_features
from fmprobe.results import read_results
from fmprobe.sharding import as_part, dealt, shard_of
from fmprobe.study import load_study, run_study

PROBE = dict(probes=["logreg", "knn"], train_fractions=[0.5, 1.0], repeats=1, n_resamples=20, progress=False)
STUDY = """
datasets = ["demo:10"]
backbones = ["efficientnet_lite0_imagenet:random", "resnet18:random", "vit_tiny_patch16_224:random"]
resolutions = [32]
probes = ["logreg", "knn"]
train_fractions = [0.5, 1.0]
repeats = 1
bootstrap = 20
[extract]
num_workers = 0
batch_size = 8
dtype = "fp32"
"""


def _rows(results: Path) -> pd.DataFrame:
    """The rows as a set: sorted, index dropped; the predictions file by name (the reader makes it absolute, and no
    other column of a row depends on when or where it ran)."""
    df = read_results(results)
    df["predictions"] = [Path(p).name for p in df["predictions"]]
    return df.sort_values(["cell_id", "metric", "subgroup"]).reset_index(drop=True)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_every_key_is_dealt_to_exactly_one_shard(n: int) -> None:
    keys = [f"cell{i}" for i in range(200)]
    owners = [[i for i in range(n) if dealt(k, (i, n))] for k in keys]
    assert all(len(o) == 1 for o in owners)
    assert [o[0] for o in owners] == [shard_of(k, n) for k in keys]  # the same answer in any process
    if n > 1:
        assert len({o[0] for o in owners}) == n  # and all shards get work


def test_shard_text_is_parsed_once_with_the_extraction_syntax() -> None:
    assert as_part("2/5") == (2, 5) and as_part((1, 3)) == (1, 3) and as_part(None) == (0, 1)
    with pytest.raises(FmprobeError, match="I/N"):
        as_part("3/3")


@pytest.fixture(scope="module")
def sharded_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Counter]:
    """Three shards of one study run at once (threads: the cache locks are per open file, like processes'),
    counting the extractions each feature file got."""
    folder = tmp_path_factory.mktemp("study")
    (folder / "s.toml").write_text(STUDY)
    study, out = load_study(folder / "s.toml"), folder / "out"
    extracted: Counter = Counter()
    original = fmprobe.extract._extract_part

    def counting(plan, loaded):  # noqa: ANN001, ANN202
        extracted[plan.path] += 1
        return original(plan, loaded)

    errors: list[BaseException] = []

    def shard(i: int) -> None:
        try:
            run_study(study, out=out, shard=f"{i}/3", progress=False)
        except BaseException as err:  # noqa: BLE001 - re-raised in the test thread
            errors.append(err)

    fmprobe.extract._extract_part = counting
    try:
        threads = [threading.Thread(target=shard, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        fmprobe.extract._extract_part = original
    if errors:
        raise errors[0]
    return out, extracted


def test_a_sharded_study_extracts_every_feature_file_once(sharded_study: tuple[Path, Counter]) -> None:
    out, extracted = sharded_study
    files = sorted((out / "features").rglob("*.h5"))
    assert len(files) == 3 and sorted(extracted) == files and set(extracted.values()) == {1}
    assert not (out / "report").exists()  # left to one unsharded run when every shard is done


def test_three_study_shards_write_exactly_the_rows_of_one_process(sharded_study: tuple[Path, Counter], tmp_path: Path) -> None:
    out, _ = sharded_study
    features = sorted((out / "features").rglob("*.h5"))
    probe_features(features, out=tmp_path / "one", val_subsample=None, **PROBE)
    sharded, single = _rows(out / "results"), _rows(tmp_path / "one")
    assert len(single) > 0
    pd.testing.assert_frame_equal(sharded, single)


def test_three_probe_shards_in_one_folder_give_the_rows_of_one_process(sharded_study: tuple[Path, Counter], tmp_path: Path) -> None:
    features = sorted((sharded_study[0] / "features").rglob("*.h5"))
    probe_features(features, out=tmp_path / "one", **PROBE)
    ran = [probe_features(features, out=tmp_path / "three", shard=f"{i}/3", **PROBE).cells_run for i in (2, 0, 1)]
    assert all(n > 0 for n in ran)
    assert sum(ran) == probe_features(features, out=tmp_path / "one", **PROBE).cells_skipped  # a partition of the cells
    pd.testing.assert_frame_equal(_rows(tmp_path / "three"), _rows(tmp_path / "one"))
    again = probe_features(features, out=tmp_path / "three", shard="1/2", **PROBE)  # another N: nothing left to run
    assert again.cells_run == 0


def test_study_shards_agree_on_the_compute_dtype_instead_of_timing_it(tmp_path: Path) -> None:
    import torch

    from fmprobe.runtime import dtype_candidates
    from fmprobe.study import _agreed_dtype

    (tmp_path / "s.toml").write_text(STUDY.replace('dtype = "fp32"\n', ""))
    study = load_study(tmp_path / "s.toml")
    assert _agreed_dtype(study, (1, 3)) == {"dtype": dtype_candidates(torch.device("cpu"), "auto")[0]}
    assert _agreed_dtype(study, (0, 1)) == {}  # one process: `auto` as ever
    assert _agreed_dtype(load_study(_write_with_dtype(tmp_path)), (1, 3)) == {}  # the study's own choice stands


def _write_with_dtype(tmp_path: Path) -> Path:
    path = tmp_path / "d.toml"
    path.write_text(STUDY)
    return path

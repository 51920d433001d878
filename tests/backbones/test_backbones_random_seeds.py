"""Several initialisations of a random control: ``NAME:random:SEED`` reaches the weights, the cache key, the rows
and the report's model names; ``NAME:random`` stays seed 0 with its cache; studies expand ``random_seeds``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from _tinynet import NAME as TINYNET
from _tinynet import registered

from fmprobe import extract_features as extract
from fmprobe.backbones import BackboneName, create_backbone, parse_backbone, resolve_weights
from fmprobe.errors import FmprobeError, UnknownNameError
from fmprobe.extract import plan_extraction
from fmprobe.report.analysis import model_label
from fmprobe.store import FeatureFile
from fmprobe.study import load_study, run_study

BACKBONE = "efficientnet_lite0_imagenet"
TINY = dict(resolution=32, batch_size=8, num_workers=0, dtype="fp32", progress=False)


def test_the_seed_is_read_once_and_seed_0_is_the_plain_control() -> None:
    assert parse_backbone(f"{BACKBONE}:random:2") == BackboneName(BACKBONE, True, 2)
    assert parse_backbone(f"{BACKBONE}:random") == BackboneName(BACKBONE, True, None)
    assert parse_backbone(f"{BACKBONE}:random:0").canonical == f"{BACKBONE}:random"
    assert parse_backbone("openclip:ViT-B-32:openai:random:3") == BackboneName("openclip:ViT-B-32:openai", True, 3)
    assert parse_backbone(BACKBONE) == BackboneName(BACKBONE)
    assert resolve_weights(f"{BACKBONE}:random:0") == resolve_weights(f"{BACKBONE}:random")
    assert resolve_weights(f"{BACKBONE}:random:1")[1].startswith("random-init:seed1:")


@pytest.mark.parametrize("bad", ["x", "-1", "", "1.5"])
def test_a_bad_seed_is_refused_naming_the_fix(bad: str) -> None:
    with pytest.raises(UnknownNameError, match=rf"bad seed '{bad}'.*non-negative integer, e.g. {BACKBONE}:random:1"):
        parse_backbone(f"{BACKBONE}:random:{bad}")
    with pytest.raises(UnknownNameError, match="bad seed"):
        plan_extraction("demo:4", f"{BACKBONE}:random:{bad}")


def test_seeds_give_different_initialisations_and_seed_0_the_plain_one() -> None:
    def weights(name: str) -> np.ndarray:
        return next(iter(create_backbone(name, resolution=32).model.state_dict().values())).numpy()

    plain, zero, one = weights(f"{BACKBONE}:random"), weights(f"{BACKBONE}:random:0"), weights(f"{BACKBONE}:random:1")
    assert np.array_equal(plain, zero) and not np.allclose(plain, one)
    assert np.array_equal(one, weights(f"{BACKBONE}:random:1"))  # reproducible


def test_two_seeds_give_different_features_and_cache_files(tmp_path: Path) -> None:
    with registered():
        _two_seeds(tmp_path)


def _two_seeds(tmp_path: Path) -> None:
    plain = extract("demo:12", backbone=f"{TINYNET}:random", out=tmp_path, **TINY)
    zero = plan_extraction("demo:12", f"{TINYNET}:random:0", out=tmp_path, **TINY)
    assert (zero.key, zero.path) == (plain.key, plain.path)  # seed 0 is the cache NAME:random always had
    one = extract("demo:12", backbone=f"{TINYNET}:random:1", out=tmp_path, **TINY)
    assert one.key != plain.key and one.path != plain.path
    a, b = FeatureFile(plain.path), FeatureFile(one.path)
    assert (a.attrs["weights_label"], b.attrs["weights_label"]) == ("random", "random:1")
    assert b.backbone == f"{TINYNET}:random:1"
    # what the report's cost section reads, stored beside (never in) the key
    assert int(b.attrs["parameters"]) == sum(p.numel() for p in create_backbone(f"{TINYNET}:random").model.parameters())
    assert float(b.attrs["extraction_seconds"]) > 0 and b.attrs["extraction_device"] == "cpu"
    assert float(b.attrs["images_per_s"]) > 0
    assert not np.allclose(a.load("test").features, b.load("test").features)


def test_rows_and_model_labels_name_the_seed() -> None:
    assert model_label(BACKBONE, "random") == f"{BACKBONE}:random"
    assert model_label(BACKBONE, "random:1") == f"{BACKBONE}:random:1"


def test_a_study_with_random_seeds_runs_three_controls(tmp_path: Path) -> None:
    body = (f'datasets = ["demo:10"]\nbackbones = ["{TINYNET}:random"]\nrandom_seeds = [0, 1, 2]\nresolutions = [32]\n'
            'probes = ["logreg"]\nbootstrap = 50\n[extract]\nnum_workers = 0\nbatch_size = 8\ndtype = "fp32"\n')  # fmt: skip
    (tmp_path / "s.toml").write_text(body)
    with registered():
        study = load_study(tmp_path / "s.toml")
        assert study.backbones == (f"{TINYNET}:random", f"{TINYNET}:random:1", f"{TINYNET}:random:2")
        run = run_study(study, out=tmp_path / "out", progress=False)
    df = pd.read_csv(tmp_path / "out" / "results" / "results.csv")
    primary = df[df.is_primary]
    assert set(primary.backbone) == {TINYNET} and sorted(primary.weights) == ["random", "random:1", "random:2"]
    assert len({FeatureFile(p).key for p in run.feature_files}) == 3
    report = run.report.markdown.read_text() if run.report is not None else ""
    assert f"{TINYNET}:random:2" in report


def test_bad_random_seeds_in_a_study_are_refused(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(f'datasets = ["demo:16"]\nbackbones = ["{BACKBONE}:random"]\nrandom_seeds = [-1]\n')
    with pytest.raises(FmprobeError, match=r"random_seeds \[-1\]: list non-negative integers"):
        load_study(tmp_path / "s.toml")


def test_fine_tuning_a_seeded_control_names_its_seed(tmp_path: Path) -> None:
    import torch

    from fmprobe.datasets import load_dataset
    from fmprobe.finetune import Recipe, RunOptions
    from fmprobe.finetune.api import plan_finetune
    from fmprobe.results import rows_for_cell

    data = load_dataset("demo:10")
    plans = {name: plan_finetune(data, name, Recipe(), RunOptions(out=tmp_path, workers=0), torch.device("cpu"))
             for name in (f"{BACKBONE}:random", f"{BACKBONE}:random:1")}  # fmt: skip
    plain, seeded = plans.values()
    assert (plain.cell.weights, seeded.cell.weights) == ("random", "random:1")
    assert plain.resolved[1].startswith("random-init:seed0:") and seeded.resolved[1].startswith("random-init:seed1:")
    auc = SimpleNamespace(value=0.5, reason=None, ci_low=0.4, ci_high=0.6)
    (row,) = rows_for_cell(seeded.cell, {"roc_auc": auc}, primary="roc_auc", params={}, n_train=1, n_test=1, val_score=None)
    assert (row.backbone, row.weights) == (BACKBONE, "random:1")
    assert model_label(row.backbone, row.weights) == f"{BACKBONE}:random:1"

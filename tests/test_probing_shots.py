"""Few-shot cells (`--shots`): k labelled images per class, one per patient where groups exist, refused early."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _helpers import shared_file

from fmprobe.errors import FmprobeError
from fmprobe.probing import ProbeGrid, plan_probing, probe_features
from fmprobe.probing.sampling import shot_rows
from fmprobe.results import read_results
from fmprobe.store import Fingerprint, SplitLayout, write_feature_file
from fmprobe.store.journal import Batch
from fmprobe.tasks import GROUP


def grouped_features(path: Path, n_train: int = 90, groups_per_class: int | None = 6, task: str = "multiclass") -> Path:
    """Three classes whose signal lives in the first dimensions; the training split records a group per image
    (``groups_per_class`` patients per class, several images each) unless None."""
    rng = np.random.default_rng(0)
    layouts, batches = {}, []
    for split, size in {"train": n_train, "val": 45, "test": 45}.items():
        labels = np.arange(size) % 3 if task != "multilabel" else np.eye(3, dtype=np.int64)[np.arange(size) % 3]
        codes = labels if task != "multilabel" else labels.argmax(axis=1)
        x = rng.normal(size=(size, 8)).astype(np.float32)
        x[:, :3] += 2.0 * np.eye(3, dtype=np.float32)[codes]
        meta = {}
        if split == "train" and groups_per_class is not None:
            meta = {GROUP: tuple(f"p{c}-{(i // 3) % groups_per_class}" for i, c in enumerate(codes))}
        layouts[split] = SplitLayout(tuple(f"{split}/{i}" for i in range(size)), labels, meta)
        batches.append(Batch(split, 0, size, {}, {"pooled": x}))
    fp = Fingerprint("shotset", "dig", "toy", "sha256:x", {}, 32, ("pooled",), "fp32", "float32")
    attrs = {"fingerprint": fp.to_json(), "key": fp.key, "schema_version": 1, "task": task,
             "class_names": json.dumps(["a", "b", "c"]), "readouts": json.dumps(["pooled"])}  # fmt: skip
    write_feature_file(path, attrs, layouts, ("pooled",), {"pooled": 8}, "float32", batches, {})
    return path


def test_shot_rows_take_k_per_class_from_k_groups_nested_and_seeded() -> None:
    labels = np.repeat([0, 1, 2], 20)
    groups = np.array([f"g{i // 4}" for i in range(60)])  # 5 groups of 4 images per class
    for k in (1, 2, 4, 5):
        rows = shot_rows(labels, k, seed=7, groups=groups)
        assert np.bincount(labels[rows]).tolist() == [k, k, k]
        assert len(set(groups[rows])) == 3 * k  # never two shots of one patient
    assert set(shot_rows(labels, 2, 7, groups)) <= set(shot_rows(labels, 4, 7, groups))  # nested within a seed
    np.testing.assert_array_equal(shot_rows(labels, 4, 7, groups), shot_rows(labels, 4, 7, groups))
    draws = {tuple(shot_rows(labels, 2, seed)) for seed in range(10)}
    assert len(draws) > 1 and all(np.bincount(labels[list(d)]).tolist() == [2, 2, 2] for d in draws)


def test_real_isic_shots_come_from_distinct_lesions() -> None:
    """On the real ISIC 2019 labels (lesion groups from its metadata), 16-shot draws of images would put two images
    of one lesion into some class in most draws (93 of 100 seeds measured); drawn per lesion, never."""
    from fmprobe.datasets import isic2019

    root = shared_file("isic2019/ISIC_2019_Training_Metadata.csv").parent
    _, labels, groups = isic2019.read_labels(root)
    groups = np.asarray(groups)
    per_image = per_lesion = 0
    for seed in range(20):
        by_image, by_lesion = shot_rows(labels, 16, seed), shot_rows(labels, 16, seed, groups)
        assert np.bincount(labels[by_lesion]).tolist() == [16] * 8
        per_lesion += any(len(set(groups[by_lesion][labels[by_lesion] == c])) < 16 for c in range(8))
        per_image += any(len(set(groups[by_image][labels[by_image] == c])) < 16 for c in range(8))
    assert per_lesion == 0 and per_image >= 10


def test_probe_runs_shot_cells_next_to_fractions_with_every_repeat(tmp_path: Path) -> None:
    features = grouped_features(tmp_path / "toy.h5")
    out = tmp_path / "results"
    run = probe_features([features], probes=["proto"], shots=[2, 1], repeats=3, out=out, n_resamples=50,
                         progress=False)  # fmt: skip
    assert run.cells_run == 1 + 2 * 3  # deterministic proto on all data once; every shot value every repeat
    prim = read_results(out).query("is_primary")
    shot = prim[prim.shots > 0]
    assert sorted(shot.groupby("shots")["repeat"].apply(sorted).tolist()) == [[0, 1, 2], [0, 1, 2]]
    assert (shot.n_train == 3 * shot.shots).all()  # k images for each of the 3 classes
    np.testing.assert_allclose(shot.train_fraction, 3 * shot.shots / 90)  # the fraction of train actually used
    assert prim[prim.shots == 0].train_fraction.tolist() == [1.0] and prim.cell_id.is_unique
    again = probe_features([features], probes=["proto"], shots=[1, 2], repeats=3, out=out, progress=False)
    assert again.cells_run == 0 and again.cells_skipped == 7


def test_too_few_patients_in_a_class_is_refused_at_plan_time_naming_class_count_and_fix(tmp_path: Path) -> None:
    features = grouped_features(tmp_path / "toy.h5", groups_per_class=4)  # 30 images per class, 4 patients each
    with pytest.raises(
        FmprobeError, match=r"--shots 8 needs 8 different patients.*class 'a' has 4\. Use --shots up to 4"
    ):
        plan_probing([features], ProbeGrid(probes=("proto",), shots=(1, 8)), tmp_path / "out")
    ungrouped = grouped_features(tmp_path / "plain.h5", n_train=12, groups_per_class=None)
    with pytest.raises(FmprobeError, match=r"needs 8 training images per class, but class 'a' has 4"):
        plan_probing([ungrouped], ProbeGrid(probes=("proto",), shots=(8,)), tmp_path / "out")
    assert len(plan_probing([ungrouped], ProbeGrid(probes=("proto",), shots=(4,)), tmp_path / "out").cells) == 2


def test_multilabel_shots_and_bad_values_are_refused_by_name(tmp_path: Path) -> None:
    features = grouped_features(tmp_path / "ml.h5", task="multilabel")
    with pytest.raises(FmprobeError, match="multilabel task has no classes.*Use --train-fraction"):
        plan_probing([features], ProbeGrid(probes=("proto",), shots=(1,)), tmp_path / "out")
    for bad in ([0], [1.5], [True]):
        with pytest.raises(FmprobeError, match=r"--shots .*whole numbers >= 1"):
            ProbeGrid(shots=tuple(bad))
    assert ProbeGrid(probes=("proto", "logreg"), shots=(4, np.int64(1), 4), repeats=2).shots == (1, 4)
    assert ProbeGrid(probes=("proto", "logreg"), shots=(1, 4), repeats=2).cells_per_readout() == 2 + 2 * 2 * 2


def test_study_files_and_the_cli_take_shots(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fmprobe.cli import app
    from fmprobe.study import load_study

    study_file = tmp_path / "s.toml"
    study_file.write_text(
        'datasets = ["demo:10"]\nbackbones = ["resnet18"]\nprobes = ["proto"]\nshots = [1, 4]\nrepeats = 2\n'
    )
    study = load_study(study_file)
    assert study.shots == (1, 4) and study.probe_cells() == 1 + 2 * 2
    study_file.write_text('datasets = ["demo:10"]\nbackbones = ["resnet18"]\nshots = [0]\n')
    with pytest.raises(FmprobeError, match="'shots' \\[0\\].*>= 1"):
        load_study(study_file)
    features = grouped_features(tmp_path / "toy.h5")
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["probe", str(features), "--probe", "proto", "--shots", "1,2", "--repeats", "2",
                                      "--bootstrap", "20", "--out", str(out), "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(read_results(out).query("is_primary").shots.tolist()) == [0, 1, 1, 2, 2]
    bad = CliRunner().invoke(app, ["probe", str(features), "--shots", "1,two", "--out", str(out)])
    assert isinstance(bad.exception, FmprobeError) and "--shots '1,two'" in str(bad.exception)

"""Which validation rows choose a cell's hyper-parameters: in proportion to the training rows a cell uses (every
class kept, whole groups, seeded), or all of them (``val_subsample="full"``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_probing import synthetic_features

from fmprobe.errors import FmprobeError
from fmprobe.probing import ProbeGrid, ValSubsample, probe_features
from fmprobe.probing.sampling import validation_rows
from fmprobe.results import CellInfo, read_results
from fmprobe.store import SplitFeatures
from fmprobe.tasks import GROUP

INFO = CellInfo("toy", "binary", "toy", "pretrained", "pooled", 32, "logreg", 0.1, 0, 0, "fp")
PROPORTIONAL, FULL = ProbeGrid(probes=("logreg",)), ProbeGrid(probes=("logreg",), val_subsample="full")


def _split(labels: np.ndarray, groups: list[str] | None = None) -> SplitFeatures:
    metadata = {} if groups is None else {GROUP: np.asarray(groups)}
    return SplitFeatures(np.zeros((len(labels), 2), np.float32), labels, np.arange(len(labels)).astype(str), metadata)


def test_validation_follows_the_training_fraction_unless_full() -> None:
    val = _split(np.repeat([0, 1], [150, 50]))
    rows = validation_rows(val, INFO, PROPORTIONAL, seed=0, used_fraction=0.1)
    assert np.bincount(val.labels[rows]).tolist() == [15, 5]  # stratified, the fraction of each class
    assert len(validation_rows(val, INFO, PROPORTIONAL, seed=0, used_fraction=1.0)) == 200
    np.testing.assert_array_equal(validation_rows(val, INFO, FULL, seed=0, used_fraction=0.1), np.arange(200))
    assert PROPORTIONAL.val_subsample is ValSubsample.proportional == ProbeGrid.defaults()["val_subsample"]


def test_a_subsample_keeps_every_class_and_every_label_side() -> None:
    val = _split(np.repeat([0, 1, 2], [190, 8, 2]))
    rows = validation_rows(val, INFO, PROPORTIONAL, seed=0, used_fraction=0.01)
    assert np.bincount(val.labels[rows]).tolist() == [2, 1, 1]
    rng = np.random.default_rng(0)
    Y = (rng.random((300, 3)) < [0.5, 0.02, 0.98]).astype(int)  # a rare positive label, a rare negative one
    Y[rng.random(Y.shape) < 0.2] = -1  # missing entries count for neither side
    rows = validation_rows(_split(Y), INFO, PROPORTIONAL, seed=0, used_fraction=0.01)
    assert ((Y[rows] == 1).any(axis=0) & (Y[rows] == 0).any(axis=0)).all() and len(rows) < 15


def test_the_subsample_is_seeded() -> None:
    val = _split(np.repeat([0, 1], [100, 100]))
    a, b = (validation_rows(val, INFO, PROPORTIONAL, seed=s, used_fraction=0.2) for s in (3, 3))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, validation_rows(val, INFO, PROPORTIONAL, seed=4, used_fraction=0.2))


def test_grouped_validation_is_subsampled_by_whole_groups() -> None:
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 6, size=80)  # 80 patients with 1-5 images each, one label per patient
    groups = [f"p{g}" for g, size in enumerate(sizes) for _ in range(size)]
    labels = np.repeat(rng.permutation(np.arange(80) % 2), sizes)
    val = _split(labels, groups)
    rows = validation_rows(val, INFO, PROPORTIONAL, seed=0, used_fraction=0.25)
    chosen = set(np.asarray(groups)[rows])
    assert len(chosen) == 20  # a quarter of each label's 40 patients
    assert all((np.asarray(groups)[rows] == g).sum() == (np.asarray(groups) == g).sum() for g in chosen)


def test_rows_record_how_many_validation_samples_chose(tmp_path: Path) -> None:
    features = synthetic_features(tmp_path / "toy.h5")  # 60 validation samples, 30 per class
    for policy, expected in (("proportional", {0.25: 16, 1.0: 60}), ("full", {0.25: 60, 1.0: 60})):
        out = tmp_path / policy
        probe_features([features], probes=["logreg"], train_fractions=[0.25, 1.0], out=out, n_resamples=0,
                       val_subsample=policy, progress=False)  # fmt: skip
        df = read_results(out)
        assert df.groupby("train_fraction").n_val.unique().map(list).to_dict() == {f: [n] for f, n in expected.items()}


def test_an_unknown_policy_is_refused_naming_the_choices() -> None:
    with pytest.raises(FmprobeError, match=r"--val-subsample 'half': choose one of proportional, full"):
        ProbeGrid(val_subsample="half")


def test_cli_and_study_files_pass_the_policy(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fmprobe.cli import app
    from fmprobe.study import load_study

    shown = CliRunner().invoke(app, ["probe", "--help"], env={"COLUMNS": "200"}).output
    assert "--val-subsample" in shown and "(default: proportional)" in " ".join(shown.replace("│", " ").split())
    body = 'datasets = ["demo"]\nbackbones = ["resnet18"]\nval_subsample = "{}"\n'
    (tmp_path / "s.toml").write_text(body.format("full"))
    assert load_study(tmp_path / "s.toml").val_subsample == "full"
    (tmp_path / "s.toml").write_text(body.format("half"))
    with pytest.raises(FmprobeError, match=r"s.toml: val_subsample 'half': choose one of proportional, full"):
        load_study(tmp_path / "s.toml")


def test_the_validation_protocol_is_part_of_a_low_label_cells_identity(tmp_path: Path) -> None:
    """A results folder written with full validation (every earlier fmprobe) never passes for proportional cells:
    the proportional cells get their own ids, full-validation and whole-training-set cells keep the old ones."""
    path = synthetic_features(tmp_path / "f.h5", n=120)
    out = tmp_path / "results"
    for policy in ("full", "proportional"):
        probe_features([path], probes=["logreg"], train_fractions=[0.5, 1.0], val_subsample=policy, out=out, progress=False)
    rows = read_results(out)
    ids = rows.groupby(["train_fraction", "val_subsample"])["cell_id"].nunique()
    assert ids.to_dict() == {(0.5, ""): 1, (0.5, "proportional"): 1, (1.0, ""): 1}
    low = rows[rows["train_fraction"] == 0.5]
    assert low.groupby("val_subsample")["n_val"].first().to_dict() == {"": 60, "proportional": 30}


def test_cells_an_earlier_fmprobe_wrote_are_not_silently_kept(tmp_path: Path) -> None:
    """A results folder from before the current protocol (rows without n_val and the other added columns) is not
    resumed into: its cells would be skipped as done and compared with new ones. --force redoes them."""
    from fmprobe.results import ADDED_COLUMNS, CSV_NAME, PARQUET_NAME

    path = synthetic_features(tmp_path / "f.h5", n=120)
    out = tmp_path / "results"
    probe_features([path], probes=["logreg"], out=out, progress=False)
    old = read_results(out).drop(columns=list(ADDED_COLUMNS))  # the table an earlier version wrote
    old["predictions"] = old["predictions"].map(lambda p: str(Path(p).relative_to(out)))
    old.to_parquet(out / PARQUET_NAME, index=False)
    old.to_csv(out / CSV_NAME, index=False)
    with pytest.raises(FmprobeError, match=r"1 of the cells to run were written by an earlier fmprobe.*--force"):
        probe_features([path], probes=["logreg"], out=out, progress=False)
    probe_features([path], probes=["logreg", "knn"], out=out, force=True, progress=False)
    assert (read_results(out)["n_val"] == 60).all()

"""`fmprobe probe` and `fmprobe demo`: cells, resumability, test-label blindness, the full loop."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from fmprobe.errors import FmprobeError, UnknownNameError
from fmprobe.probing import probe_features, subsample
from fmprobe.results import load_predictions, read_results
from fmprobe.store import Fingerprint, SplitLayout, write_feature_file
from fmprobe.store.journal import Batch


def synthetic_features(
    path: Path, task: str = "binary", n: int = 120, d: int = 16, seed: int = 0, backbone: str = "toy",
    nan_in: str | None = None,
) -> Path:
    """A valid feature file whose class signal lives in the first feature dimensions."""
    import json

    rng = np.random.default_rng(seed)
    n_classes = 2 if task == "binary" else 4
    sizes = {"train": n, "val": n // 2, "test": n // 2}
    layouts, batches = {}, []
    for split, size in sizes.items():
        labels = np.arange(size) % n_classes
        x = rng.normal(size=(size, d)).astype(np.float16)
        x[:, :n_classes] += 1.5 * np.eye(n_classes, dtype=np.float16)[labels]
        if split == nan_in:
            x[3, 2] = np.nan  # what broken weights write
        layouts[split] = SplitLayout(tuple(f"{split}/{i}" for i in range(size)), labels)
        batches.append(Batch(split, 0, size, {}, {"pooled": x}))
    fp = Fingerprint("toyset", "dig", backbone, "sha256:x", {}, 32, ("pooled",), "fp32", "float16")
    attrs = {"fingerprint": fp.to_json(), "key": fp.key, "schema_version": 1, "task": task,
             "class_names": json.dumps([str(c) for c in range(n_classes)]), "readouts": json.dumps(["pooled"]),
             "primary_metric": {"binary": "roc_auc", "ordinal": "quadratic_kappa"}.get(task, "balanced_accuracy")}  # fmt: skip
    write_feature_file(path, attrs, layouts, ("pooled",), {"pooled": d}, "float16", batches, {})
    return path


def test_probe_writes_rows_with_cis_and_resumes(tmp_path: Path) -> None:
    features = synthetic_features(tmp_path / "toy.h5")
    out = tmp_path / "results"
    run = probe_features([features], probes=["logreg", "knn"], train_fractions=[0.25, 1.0], repeats=2, out=out,
                         n_bootstrap=200, progress=False)  # fmt: skip
    assert run.cells_run == 2 * (2 + 1)  # fraction 0.25 repeated, 1.0 once for deterministic probes
    df = read_results(out)
    pd.testing.assert_frame_equal(run.results, df)  # the run hands back its rows as a DataFrame
    primary = df[df.is_primary]
    assert set(primary.metric) == {"roc_auc"} and len(primary) == 6
    full = primary[(primary.train_fraction == 1.0) & (primary.probe == "logreg")].iloc[0]
    assert 0.85 < full.value <= 1.0 and full.ci_low <= full.value <= full.ci_high
    assert full.n_train == 120 and full.n_test == 60
    pred = load_predictions(out / full.predictions)
    assert pred.y_score.shape == (60, 2) and list(pred.ids[:2]) == ["test/0", "test/1"]
    again = probe_features([tmp_path], probes=["logreg", "knn"], train_fractions=[0.25, 1.0], repeats=2, out=out,
                           n_bootstrap=200, progress=False)  # fmt: skip
    assert again.cells_run == 0 and again.cells_skipped == 6 and len(read_results(out)) == len(df)


def test_test_labels_never_influence_choices(tmp_path: Path) -> None:
    features = synthetic_features(tmp_path / "toy.h5", task="multiclass")
    kwargs = dict(probes=["logreg", "knn", "lgbm"], n_bootstrap=0, progress=False)
    probe_features([features], out=tmp_path / "a", **kwargs)
    from fmprobe.store.features import _crc_of
    from fmprobe.store.integrity import seal

    with h5py.File(features, "a") as h5:  # permute the test labels (and re-seal the checksum)
        labels = h5["test/labels"][()]
        h5["test/labels"][...] = np.random.default_rng(1).permutation(labels)
        h5["test/labels"].attrs["crc32"] = _crc_of(h5["test/labels"])
    seal(features)
    probe_features([features], out=tmp_path / "b", **kwargs)
    a, b = read_results(tmp_path / "a"), read_results(tmp_path / "b")
    cols = ["probe", "params", "val_score"]
    assert a[a.is_primary][cols].reset_index(drop=True).equals(b[b.is_primary][cols].reset_index(drop=True))


def test_ordinal_uses_kappa_and_subsample_keeps_classes(tmp_path: Path) -> None:
    features = synthetic_features(tmp_path / "toy.h5", task="ordinal")
    probe_features([features], probes=["logreg"], out=tmp_path / "r", n_bootstrap=0, progress=False)
    df = read_results(tmp_path / "r")
    assert df[df.is_primary].metric.tolist() == ["quadratic_kappa"]
    labels = np.repeat(np.arange(4), [50, 5, 30, 2])
    idx = subsample(labels, 0.1, seed=0)
    assert set(labels[idx]) == {0, 1, 2, 3} and np.array_equal(idx, subsample(labels, 0.1, seed=0))


def test_probe_errors_are_named(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="Closest: knn"):
        probe_features([tmp_path], probes=["knnn"])
    with pytest.raises(FmprobeError, match="no feature files"):
        probe_features([tmp_path])
    with pytest.raises(FmprobeError, match="no such feature file"):
        probe_features([tmp_path / "missing.h5"])
    synthetic_features(tmp_path / "toy.h5")
    with pytest.raises(FmprobeError, match="readout.*not extracted"):
        probe_features([tmp_path], readouts=["cls"], progress=False)


def test_subsample_stratifies_multilabel_with_missing_entries() -> None:
    rng = np.random.default_rng(0)
    Y = (rng.random((1000, 5)) < 0.2).astype(int)
    Y_missing = np.where(rng.random(Y.shape) < 0.3, -1, Y)
    index = subsample(Y_missing, 0.25, seed=3)
    assert len(index) == pytest.approx(250, abs=5) and len(np.unique(index)) == len(index)
    np.testing.assert_array_equal(index, subsample(np.maximum(Y_missing, 0), 0.25, seed=3))  # -1 counts as 0
    positive = Y_missing > 0
    key = positive.argmax(axis=1) * positive.any(axis=1)
    for value in np.unique(key):  # every stratum keeps its share (and at least one row)
        members = key == value
        assert np.isin(np.flatnonzero(members), index).sum() == max(1, round(0.25 * members.sum()))


def test_plan_lists_cells_without_fitting_and_grid_checks_early(tmp_path: Path) -> None:
    from fmprobe.probing import ProbeGrid, plan_probing

    features = synthetic_features(tmp_path / "toy.h5")
    grid = ProbeGrid(probes=("logreg", "lgbm"), train_fractions=(0.5, 1.0), repeats=3)
    plan = plan_probing([features], grid, tmp_path / "r")
    # deterministic logreg on all the data runs once; a subsample or the seeded lgbm gets every repeat
    assert grid.cells_per_readout() == len(plan.cells) == 3 + 1 + 3 + 3 and plan.skipped == 0
    assert len({c.info.cell_id for c in plan.cells}) == len(plan.cells) and not (tmp_path / "r").exists()
    assert ProbeGrid.from_options(repeats=None, seed=None) == ProbeGrid()
    with pytest.raises(FmprobeError, match="ks"):  # a bad probe parameter fails when the grid is built
        ProbeGrid(probes=("knn",), probe_params={"knn": {"ks": (0, 5)}})
    with pytest.raises(FmprobeError, match="fractions must be in"):
        ProbeGrid(train_fractions=(0.0,))


def test_cells_are_appended_one_part_each_and_compacted_once(tmp_path: Path) -> None:
    features = synthetic_features(tmp_path / "toy.h5")
    out = tmp_path / "r"
    run = probe_features([features], probes=["logreg", "knn"], out=out, n_bootstrap=0, progress=False)
    assert run.cells_run == 2 and not list((out / "pending").glob("*.parquet"))  # folded into the table
    pd.testing.assert_frame_equal(read_results(out / "results.csv"), read_results(out))


def test_the_cli_starts_without_the_heavy_stack() -> None:
    """`fmprobe` reads the probe and report defaults for its --help on every start: building the whole command
    (every option's help) must not import scikit-learn, LightGBM, pandas, matplotlib or torch (~2 s)."""
    heavy = ("sklearn", "lightgbm", "pandas", "matplotlib", "torch")
    code = (
        "import sys, typer.main, fmprobe.cli\n"
        "typer.main.get_command(fmprobe.cli.app)\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    from fmprobe.probing import ProbeGrid
    from fmprobe.report import ReportOptions, write_report

    assert ProbeGrid.defaults()["probes"] == ProbeGrid().probes  # the light defaults are the grid's
    parameters = inspect.signature(write_report).parameters  # follows the deprecated-names wrapper to the function
    assert {k: parameters[k].default for k in ReportOptions.defaults()} == ReportOptions.defaults()


def test_an_unwritable_out_fails_before_any_fit(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import errno

    import fmprobe.probing.run as run
    import fmprobe.results as results

    features = synthetic_features(tmp_path / "toy.h5")

    def read_only(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    def no_fit(*_args: object) -> int:
        raise AssertionError("a cell was fitted before the results folder was checked")

    monkeypatch.setattr(results, "prove_writable", read_only)  # what a read-only mount does to the test write
    monkeypatch.setattr(run, "_run_cell", no_fit)
    with pytest.raises(FmprobeError, match=r"results folder .*/r .*read-only.*--out"):
        probe_features([features], probes=["logreg"], out=tmp_path / "r", n_bootstrap=0, progress=False)


def test_nan_features_name_the_file_readout_and_fix(tmp_path: Path) -> None:
    features = synthetic_features(tmp_path / "toy.h5", nan_in="val")
    with pytest.raises(FmprobeError, match=r"toy.h5.*'val'.*'pooled'.*NaN/inf.*--force.*check --weights"):
        probe_features([features], probes=["logreg"], out=tmp_path / "r", n_bootstrap=0, progress=False)
    from fmprobe.probes import make_probe

    X = np.random.default_rng(0).normal(size=(40, 4))
    y = np.arange(40) % 2
    bad = X.copy()
    bad[5, 1] = np.inf
    with pytest.raises(FmprobeError, match=r"eval_set X contains NaN or infinite.*--force.*check --weights"):
        make_probe("logreg").fit(X, y, eval_set=(bad, y))
    with pytest.raises(FmprobeError, match=r"^X contains NaN or infinite"):
        make_probe("knn").fit(bad, y)


def test_a_truncated_results_table_is_a_named_error_in_probe(tmp_path: Path) -> None:
    features = synthetic_features(tmp_path / "toy.h5")
    out = tmp_path / "r"
    probe_features([features], probes=["logreg"], out=out, n_bootstrap=0, progress=False)
    table = out / "results.parquet"
    table.write_bytes(table.read_bytes()[:100])
    with pytest.raises(FmprobeError, match=r"results.parquet is damaged.*results.csv is intact"):
        probe_features([features], probes=["logreg"], out=out, n_bootstrap=0, progress=False)
    table.unlink()
    run = probe_features([features], probes=["logreg"], out=out, n_bootstrap=0, progress=False)
    assert run.cells_run == 0 and run.cells_skipped == 1 and table.exists() is False  # nothing lost, nothing redone


def test_a_single_path_given_as_a_string_is_one_feature_file_and_the_run_returns_its_rows(tmp_path: Path) -> None:
    from fmprobe.probing.plan import find_feature_files

    folder = tmp_path / "feats"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.h5").write_bytes(b"")
    assert find_feature_files(str(folder)) == [(folder / "sub" / "a.h5").resolve()]
    with pytest.raises(FmprobeError, match="no such feature file or folder"):
        find_feature_files(str(tmp_path / "nope"))

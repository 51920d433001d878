"""Dataset variants never pool silently: variants get names of their own through extract -> probe -> report, and the
report refuses rows of one dataset scored on different test sets (or pooled from several feature caches) unless
told to compare them on the test ids they share."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _helpers import make_images, write_manifest
from _tinynet import NAME, registered

from fmprobe import cli
from fmprobe.errors import ResultsError
from fmprobe.extract import extract_features
from fmprobe.metrics import compute_all
from fmprobe.probing import probe_features
from fmprobe.report import format_table, write_report
from fmprobe.results import COLUMNS, ResultRow, append_rows, cell_id, read_results, save_predictions
from fmprobe.results import test_set_digest as digest_of_ids

SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _manifest(folder: Path) -> Path:
    labels = ["benign", "malignant"] * 20
    names = make_images(folder, labels, seed=3)
    return write_manifest(folder / "labels.csv", ["path", "label"], [[n, lab] for n, lab in zip(names, labels, strict=True)])


def test_variants_run_apart_through_extract_probe_and_report(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "site")
    specs = [(f"csv:{manifest}", None), (f"csv:{manifest}?seed=1", None), (f"csv:{manifest}?seed=1", 16)]
    with registered():
        runs = [
            extract_features(spec, f"{NAME}:random", out=tmp_path / "f", max_images_per_split=n, num_workers=0, progress=False)
            for spec, n in specs
        ]  # fmt: skip
        probe_features([r.path for r in runs], probes=["logreg"], n_resamples=30, out=tmp_path / "results", progress=False)
    assert all(SAFE_FILE_NAME.match(part) for r in runs for part in r.path.relative_to(tmp_path / "f").parts)
    assert len({r.path.parent for r in runs}) == 3  # three features folders, one per variant
    names = sorted(set(read_results(tmp_path / "results")["dataset"]))
    assert len(names) == 3
    plain, seeded, subset = sorted(names, key=len)
    assert re.fullmatch(r"labels-[0-9a-f]{6}", plain)  # the default variant keeps its plain name
    assert re.fullmatch(r"labels\[seed=1\]-[0-9a-f]{6}", seeded) and seeded[-6:] != plain[-6:]
    assert subset == seeded.replace("[seed=1]", "[seed=1,max_images_per_split=16]")  # the subset: same data, fewer
    paths = write_report(tmp_path / "results", tmp_path / "report", n_resamples=30)
    md = paths.markdown.read_text()
    for name in names:  # each variant is a dataset of its own, shown by its readable name
        assert f"Dataset `{name}`" in md
        assert format_table(tmp_path / "results", name).count(NAME) == 1  # one row: nothing pooled
    assert all(SAFE_FILE_NAME.match(p.name) for p in paths.plots)


# ------------------------------------------------------------------------------------------------ test sets

TEST_IDS = [f"img_{i:03d}.png" for i in range(60)]
Y_TEST = np.random.default_rng(0).integers(0, 2, len(TEST_IDS))


def _row_set(results: Path, backbone: str, n_test: int, *, record_test_set: bool = True, fingerprint: str = "") -> list[ResultRow]:
    """One logreg cell of ``backbone`` on dataset 'lesions', scored on the first ``n_test`` test ids (a
    ``max_images_per_split`` run scores fewer). ``record_test_set=False``: a row of an older table."""
    strength = {"base_net": 1.0, "big_net": 2.5}[backbone]
    rng = np.random.default_rng(len(backbone))
    ids, y = TEST_IDS[:n_test], Y_TEST[:n_test]
    score = np.clip(0.5 + strength * 0.2 * (y - 0.5) + rng.normal(0, 0.2, n_test), 0.01, 0.99)
    score = np.stack([1 - score, score], axis=1)
    key = dict(dataset="lesions", backbone=backbone, weights="pretrained", readout="cls", resolution=224, probe="logreg",
               train_fraction=1.0, repeat=0, seed=0, fingerprint=fingerprint or f"fp-{backbone}-{n_test}")  # fmt: skip
    cid = cell_id(**key)
    pred = save_predictions(results, cid, ids, y, score, {"task": "binary", "class_names": ["a", "b"], **key})
    value = compute_all(y, score, "binary", metrics=["roc_auc"], n_resamples=50, seed=0)["roc_auc"]
    return [
        ResultRow(task="binary", params="{}", metric="roc_auc", value=value.value, ci_low=value.ci_low,
                  ci_high=value.ci_high, missing_reason="", is_primary=True, n_train=100, n_test=n_test, val_score=0.7,
                  cell_id=cid, predictions=pred, imagenet_baseline=backbone == "base_net",
                  test_set=digest_of_ids(ids) if record_test_set else "", **key)  # fmt: skip
    ]


def _table(tmp_path: Path, sizes: dict[str, int], record_test_set: bool = True) -> Path:
    results = tmp_path / "results"
    append_rows(results, [r for b, n in sizes.items() for r in _row_set(results, b, n, record_test_set=record_test_set)])
    return results


def test_backbones_scored_on_different_test_subsets_are_refused_with_the_option_named(tmp_path: Path) -> None:
    results = _table(tmp_path, {"base_net": 60, "big_net": 40})
    with pytest.raises(ResultsError) as refused:
        write_report(results, tmp_path / "report", n_resamples=50)
    message = str(refused.value)
    assert "dataset 'lesions'" in message and "--allow-different-test-sets" in message
    assert "60 test samples" in message and "40 test samples" in message
    assert "base_net · cls @224 · logreg" in message and "big_net · cls @224 · logreg" in message
    with pytest.raises(ResultsError, match="allow_different_test_sets"):
        format_table(results, "lesions")

    paths = write_report(results, tmp_path / "report", n_resamples=50, allow_different_test_sets=True)
    md = paths.markdown.read_text()
    assert "**Different test sets**" in md and "2 different test sets" in md  # said visibly
    assert "on the 40 test ids both were scored on (of 40 and 60)" in md  # the gain: common ids only
    assert re.search(r"\| big_net \| [+-]\d+\.\d% \[", md)  # and it is computed


def test_an_older_table_is_checked_by_its_predictions_ids(tmp_path: Path) -> None:
    results = _table(tmp_path, {"base_net": 60, "big_net": 40}, record_test_set=False)
    with pytest.raises(ResultsError, match="2 different test sets.*--allow-different-test-sets"):
        write_report(results, tmp_path / "report", n_resamples=50)


def test_an_older_table_without_the_test_set_column_still_loads_and_reports(tmp_path: Path) -> None:
    results = _table(tmp_path, {"base_net": 60, "big_net": 60}, record_test_set=False)
    old = read_results(results).drop(columns=["test_set"])  # a table written before the column existed
    assert "test_set" not in old.columns and list(read_results(results).columns) == list(COLUMNS)
    paths = write_report(old, tmp_path / "report", n_resamples=50)
    md = paths.markdown.read_text()
    assert "Different test sets" not in md and re.search(r"\| big_net \| [+-]\d+\.\d% \[", md)


def test_a_table_cell_pooling_several_feature_caches_is_refused(tmp_path: Path) -> None:
    results = tmp_path / "results"
    rows = _row_set(results, "base_net", 60, fingerprint="fp-zeros") + _row_set(results, "big_net", 60)
    pooled = _row_set(results, "base_net", 60, fingerprint="fp-ignore")
    pooled = [pd.Series(r.__dict__).to_dict() for r in pooled]
    rows += [ResultRow(**{**r, "repeat": 1, "cell_id": r["cell_id"][::-1]}) for r in pooled]  # same cell, other cache
    append_rows(results, rows)
    with pytest.raises(ResultsError) as refused:
        write_report(results, tmp_path / "report", n_resamples=50, allow_different_test_sets=True)
    message = str(refused.value)
    assert "base_net · cls @224 · logreg" in message and "fp-ignore, fp-zeros" in message
    assert "Separate them" in message


def test_the_report_command_takes_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    results = _table(tmp_path, {"base_net": 60, "big_net": 40})
    monkeypatch.setattr(sys, "argv", ["fmprobe", "report", str(results), "--out", str(tmp_path / "r"), "--bootstrap", "50"])
    with pytest.raises(SystemExit) as exit_code:
        cli.main()
    assert exit_code.value.code == 1 and "--allow-different-test-sets" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--allow-different-test-sets"])
    cli.main()
    assert "**Different test sets**" in (tmp_path / "r" / "report.md").read_text()

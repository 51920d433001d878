"""Result-row schema, the row builder, per-cell appends and compaction (atomic, concurrent), round trips and
predictions files."""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import multiprocessing as mp
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmprobe.errors import ResultsError
from fmprobe.metrics import MetricValue
from fmprobe.results import (
    ADDED_COLUMNS,
    COLUMNS,
    CellInfo,
    ResultRow,
    append_rows,
    cell_id,
    check_writable,
    compact_results,
    done_cells,
    load_predictions,
    printable,
    read_results,
    rows_for_cell,
    save_predictions,
    to_frame,
    validate,
    write_cell,
)

CELL = dict(
    dataset="demo",
    backbone="toy_imagenet",
    weights="pretrained",
    readout="cls",
    resolution=224,
    probe="logreg",
    train_fraction=1.0,
    repeat=0,
    seed=0,
    fingerprint="fp0",
)


def _row(metric: str = "roc_auc", value: float = 0.9, **cell: object) -> ResultRow:
    key = {**CELL, **cell}
    missing = math.isnan(value)
    return ResultRow(
        task="binary",
        params=json.dumps({"C": 1.0}),
        metric=metric,
        value=value,
        ci_low=math.nan if missing else value - 0.05,
        ci_high=math.nan if missing else value + 0.05,
        missing_reason="only one class in y_true" if missing else "",
        is_primary=metric == "roc_auc",
        n_train=100,
        n_test=50,
        val_score=0.88,
        cell_id=cell_id(**key),
        predictions="",
        **key,
    )


def _rows(n_cells: int, start: int = 0) -> list[ResultRow]:
    return [_row(m, 0.5 + 0.01 * i, seed=start + i) for i in range(n_cells) for m in ("roc_auc", "accuracy")]


# ------------------------------------------------------------------------------------------------ schema


def test_cell_id_is_stable_and_sensitive() -> None:
    a = cell_id(**CELL)
    assert len(a) == 16 and int(a, 16) >= 0
    assert a == cell_id(**{**CELL, "resolution": 224.0, "train_fraction": np.float32(1.0)})
    assert a == "a01d72256ec1ec3f"  # pinned: changing the hash would orphan every existing results dir
    for key, other in [
        ("weights", "random"),
        ("readout", "mean"),
        ("train_fraction", 0.1),
        ("repeat", 1),
        ("fingerprint", "fp1"),
        ("resolution", 448),
    ]:
        assert cell_id(**{**CELL, key: other}) != a, key
    with pytest.raises(TypeError):
        cell_id(*CELL.values())  # keyword-only: a reordered positional call cannot silently change ids


def test_validate_accepts_good_rows_and_names_schema_errors() -> None:
    df = to_frame([_row(), _row("accuracy", math.nan)])
    assert validate(df) is df
    with pytest.raises(ResultsError, match=r"missing columns: seed.*unexpected columns: colour"):
        validate(df.drop(columns="seed").assign(colour="red"))
    with pytest.raises(ResultsError, match=r"resolution \(expected int"):
        validate(df.assign(resolution="224"))
    with pytest.raises(ResultsError, match=r"is_primary \(expected bool"):
        validate(df.assign(is_primary=1))
    with pytest.raises(ResultsError, match="missing_reason is empty"):
        validate(df.assign(missing_reason=""))
    with pytest.raises(ResultsError, match="task not one of"):
        validate(df.assign(task="regression"))
    with pytest.raises(ResultsError, match="train_fraction outside"):
        validate(df.assign(train_fraction=1.5))
    with pytest.raises(ResultsError, match="params is not a JSON"):
        validate(df.assign(params="C=1"))


# ------------------------------------------------------------------------------------------------ files


def test_rows_for_cell_builds_one_row_per_metric_with_the_cell_id() -> None:
    cell = CellInfo(task="binary", **{**CELL, "backbone": "toy_imagenet:random", "weights": "random"})
    values = {"roc_auc": MetricValue(0.9, ci_low=0.8, ci_high=0.95), "accuracy": MetricValue(None, "one class")}
    rows = rows_for_cell(
        cell, values, primary="roc_auc", params={"C": np.float64(0.5), "k": np.int64(3)}, n_train=100, n_test=50,
        val_score=None, predictions="predictions/x.npz",
    )  # fmt: skip
    validate(to_frame(rows))
    auc, acc = rows
    assert auc.cell_id == acc.cell_id == cell_id(**{**CELL, "backbone": "toy_imagenet:random", "weights": "random"})
    assert auc.backbone == "toy_imagenet" and auc.weights == "random"  # the id keeps ':random', the row says weights
    assert (auc.metric, auc.value, auc.ci_low, auc.ci_high, auc.is_primary) == ("roc_auc", 0.9, 0.8, 0.95, True)
    assert acc.missing_reason == "one class" and math.isnan(acc.value) and not acc.is_primary
    assert json.loads(auc.params) == {"C": 0.5, "k": 3} and math.isnan(auc.val_score)


def test_write_cell_saves_predictions_then_rows(tmp_path: Path) -> None:
    cell = CellInfo(task="binary", **CELL)
    rows = write_cell(
        tmp_path, cell, {"roc_auc": MetricValue(1.0)}, ids=["a", "b"], y_true=np.array([0, 1]),
        y_score=np.array([[0.9, 0.1], [0.2, 0.8]]), meta={"task": "binary"}, primary="roc_auc", params={},
        n_train=10, val_score=0.7,
    )  # fmt: skip
    assert rows[0].n_test == 2 and done_cells(tmp_path) == {cell.cell_id}
    assert load_predictions(read_results(tmp_path)["predictions"].iloc[0]).ids.tolist() == ["a", "b"]


def test_round_trip_csv_and_parquet_is_exact(tmp_path: Path) -> None:
    rows = [_row(), _row("accuracy", math.nan), _row(value=1 / 3, probe="knn")]
    append_rows(tmp_path, rows)
    assert compact_results(tmp_path) == 1
    from_dir = read_results(tmp_path)
    from_csv = read_results(tmp_path / "results.csv")
    from_parquet = read_results(tmp_path / "results.parquet")
    pd.testing.assert_frame_equal(from_csv, from_parquet)
    pd.testing.assert_frame_equal(from_dir, from_parquet)
    assert list(from_csv.columns) == list(COLUMNS)
    assert from_csv["value"].iloc[2] == 1 / 3  # full float precision survives the CSV
    assert math.isnan(from_csv["value"].iloc[1]) and from_csv["missing_reason"].iloc[1] == "only one class in y_true"
    assert from_csv["missing_reason"].iloc[0] == "" and from_csv["is_primary"].dtype == bool
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_append_dedupes_newest_wins(tmp_path: Path) -> None:
    append_rows(tmp_path, [_row(value=0.7), _row("accuracy", 0.6)])
    compact_results(tmp_path)
    assert len(append_rows(tmp_path, [_row(value=0.8)])) == 1  # returns the rows it appended
    assert append_rows(tmp_path, []).empty
    for _ in range(2):  # before and after compaction: the pending row replaces the compacted one
        df = read_results(tmp_path)
        assert len(df) == 2 and df.set_index("metric").loc["roc_auc", "value"] == 0.8
        compact_results(tmp_path)


def _expected_table(batches: list[list[ResultRow]]) -> pd.DataFrame:
    """What appending the batches one by one to a single table gives: all rows, the newest per (cell, metric)."""
    df = to_frame([r for batch in batches for r in batch])
    return df.drop_duplicates(["cell_id", "metric"], keep="last").reset_index(drop=True)


def _cell_batches(n: int) -> list[list[ResultRow]]:
    """n cells of two rows each; every third cell is a rerun (new values) of an earlier one."""
    return [
        [_row(m, 0.5 + 0.001 * i, seed=(i - 2 if i % 3 == 2 else i)) for m in ("roc_auc", "accuracy")] for i in range(n)
    ]


def test_appending_n_cells_gives_the_same_table_without_rewriting_it(tmp_path: Path) -> None:
    batches = _cell_batches(30)
    for batch in batches:
        append_rows(tmp_path, batch)
    assert not (tmp_path / "results.parquet").exists()  # appending never rewrote the table
    expected = _expected_table(batches)
    pending = read_results(tmp_path)
    pd.testing.assert_frame_equal(pending.drop(columns="predictions"), expected.drop(columns="predictions"))
    assert compact_results(tmp_path) == 30 and compact_results(tmp_path) == 0
    assert not list((tmp_path / "pending").iterdir())
    for source in (tmp_path, tmp_path / "results.csv", tmp_path / "results.parquet"):
        pd.testing.assert_frame_equal(read_results(source), pending)


def test_a_crash_between_append_and_compaction_loses_nothing(tmp_path: Path) -> None:
    batches = _cell_batches(12)
    for batch in batches[:4]:
        append_rows(tmp_path, batch)
    compact_results(tmp_path)  # an old, compacted table ...
    for batch in batches[4:8]:
        append_rows(tmp_path, batch)  # ... plus parts a crashed run never compacted
    kept = tmp_path / "kept"
    shutil.copytree(tmp_path / "pending", kept)
    compact_results(tmp_path)
    shutil.copytree(kept, tmp_path / "pending", dirs_exist_ok=True)  # a crash after the table, before the unlinks
    for batch in batches[8:]:
        append_rows(tmp_path, batch)  # the next run appends on top
    expected = _expected_table(batches).drop(columns="predictions")
    pd.testing.assert_frame_equal(read_results(tmp_path).drop(columns="predictions"), expected)
    compact_results(tmp_path)
    pd.testing.assert_frame_equal(read_results(tmp_path / "results.csv").drop(columns="predictions"), expected)


def test_append_refuses_bad_rows_without_touching_files(tmp_path: Path) -> None:
    append_rows(tmp_path, [_row()])
    bad = dataclasses.replace(_row("accuracy"), value=math.nan)  # NaN without a reason
    with pytest.raises(ResultsError, match="missing_reason"):
        append_rows(tmp_path, [bad])
    assert len(read_results(tmp_path)) == 1


def _append_many(results_dir: str, worker: int, batches: int, start: object) -> None:
    start.wait()  # type: ignore[attr-defined]  # both writers begin together, so their appends interleave
    for b in range(batches):
        append_rows(results_dir, _rows(3, start=1000 * worker + 10 * b))
        if b % 4 == 3:
            compact_results(results_dir)  # compactions race with the other writer's appends


def test_concurrent_appends_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 15, start)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    expected = {(r.cell_id, r.metric) for w in (1, 2) for b in range(15) for r in _rows(3, start=1000 * w + 10 * b)}
    df = read_results(tmp_path)
    assert len(df) == len(expected) == 2 * 15 * 3 * 2  # every row of both writers, each exactly once
    assert set(zip(df["cell_id"], df["metric"])) == expected
    compact_results(tmp_path)
    assert not list((tmp_path / "pending").glob("*.parquet")) and not list(tmp_path.glob(".*.tmp"))
    for table in ("results.csv", "results.parquet"):  # both compacted copies hold the same rows, once each
        pd.testing.assert_frame_equal(read_results(tmp_path / table), read_results(tmp_path))


# ------------------------------------------------------------------------------------------------ faults


def _fail_with(code: int):  # type: ignore[no-untyped-def]
    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    return fail


@pytest.mark.parametrize(("code", "fix"), [(errno.EROFS, "read-only"), (errno.ENOSPC, "disk is full")])
def test_check_writable_writes_for_real_and_names_the_fix(tmp_path: Path, monkeypatch, code: int, fix: str) -> None:  # type: ignore[no-untyped-def]
    assert check_writable(tmp_path / "new" / "r") == tmp_path / "new" / "r" and not list((tmp_path / "new" / "r").iterdir())
    monkeypatch.setattr(os, "fsync", _fail_with(code))  # a full disk often shows only when the data is flushed
    with pytest.raises(ResultsError, match=rf"results folder {re.escape(str(tmp_path))}.*{fix}.*--out"):
        check_writable(tmp_path)
    monkeypatch.undo()
    assert not list(tmp_path.glob(".*"))  # the write test leaves nothing behind


def test_a_failed_write_is_a_named_error_and_keeps_the_table(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    append_rows(tmp_path, [_row()])
    compact_results(tmp_path)
    before = (tmp_path / "results.parquet").read_bytes(), (tmp_path / "results.csv").read_bytes()
    append_rows(tmp_path, [_row("accuracy", 0.6)])

    def half_then_full(self: pd.DataFrame, path: object, *args: object, **kwargs: object) -> None:
        Path(str(path)).write_bytes(b"PAR1 half a table")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_then_full)
    with pytest.raises(ResultsError, match="disk is full"):
        append_rows(tmp_path, [_row("f1", 0.5)])
    with pytest.raises(ResultsError, match="disk is full"):
        compact_results(tmp_path)
    monkeypatch.undo()
    assert ((tmp_path / "results.parquet").read_bytes(), (tmp_path / "results.csv").read_bytes()) == before
    assert not list(tmp_path.rglob(".*.tmp"))  # no half-written file anywhere
    assert sorted(read_results(tmp_path)["metric"]) == ["accuracy", "roc_auc"]  # the pending part is kept too


def test_a_truncated_parquet_names_the_intact_twin_and_the_fix(tmp_path: Path) -> None:
    append_rows(tmp_path, _rows(3))
    compact_results(tmp_path)
    expected = read_results(tmp_path)
    table = tmp_path / "results.parquet"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    for source in (tmp_path, table):
        with pytest.raises(ResultsError, match=rf"{re.escape(str(table))} is damaged.*results.csv is intact \(6 rows\)"):
            read_results(source)
    table.unlink()  # the fix the message gives
    pd.testing.assert_frame_equal(read_results(tmp_path), expected)
    append_rows(tmp_path, [_row(seed=99)])
    compact_results(tmp_path)  # rewrites results.parquet from the twin plus the new part
    assert len(read_results(tmp_path / "results.parquet")) == 7
    (tmp_path / "results.csv").write_bytes(b"")  # both copies gone: say so and how to recompute
    table.write_bytes(b"")
    with pytest.raises(ResultsError, match="No intact copy is left: delete .* rerun `fmprobe probe`"):
        done_cells(tmp_path)
    table.unlink()
    with pytest.raises(ResultsError, match=r"results.csv is damaged.*rerun `fmprobe probe`"):
        read_results(tmp_path)


def test_a_damaged_pending_part_says_its_cell_runs_again(tmp_path: Path) -> None:
    append_rows(tmp_path, [_row()])
    (part,) = (tmp_path / "pending").glob("*.parquet")
    part.write_bytes(b"PAR1")
    with pytest.raises(ResultsError, match=rf"{re.escape(str(part))} is damaged.*Delete it.*its cell runs again"):
        read_results(tmp_path)


def test_text_that_is_not_utf8_is_written_escaped(tmp_path: Path) -> None:
    """A dataset or class name from a non-UTF-8 file name (surrogate-escaped) cannot go into parquet, CSV or HTML
    as is: it is written as its backslash escape, the same on every run."""
    name = b"site\xff".decode("utf-8", "surrogateescape")
    cid = cell_id(**{**CELL, "dataset": name})
    rel = save_predictions(tmp_path, cid, ["a", "b"], np.array([0, 1]), np.eye(2), {"class_names": [name, "b\udc80"]})
    row = dataclasses.replace(_row(dataset=name), predictions=rel, params=json.dumps({"path": name}))
    append_rows(tmp_path, [row])
    compact_results(tmp_path)
    for source in (tmp_path / "results.parquet", tmp_path / "results.csv"):
        df = read_results(source)
        assert df["dataset"].tolist() == ["site\\xff"] and df["cell_id"].tolist() == [cid]  # identity kept
    assert done_cells(tmp_path) == {cid}  # so a rerun skips the cell
    assert load_predictions(read_results(tmp_path)["predictions"].iloc[0]).class_names == ["site\\xff", "b\\x80"]
    assert printable("plain ü") == "plain ü"


def test_read_several_dirs_concatenates_and_resolves_predictions(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 2)):
        d = tmp_path / name
        cid = cell_id(**{**CELL, "seed": seed})
        rel = save_predictions(
            d, cid, ["x", "y"], np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]]), {"task": "binary"}
        )
        append_rows(d, [dataclasses.replace(_row(seed=seed), predictions=rel)])
    df = read_results([tmp_path / "a", tmp_path / "b"])
    assert len(df) == 2
    assert all(Path(p).is_file() and Path(p).is_absolute() for p in df["predictions"])
    assert [Path(p).parent.parent.name for p in df["predictions"]] == ["a", "b"]
    with pytest.raises(ResultsError, match="no results.parquet or results.csv"):
        read_results(tmp_path)


def test_done_cells_needs_rows_and_predictions(tmp_path: Path) -> None:
    assert done_cells(tmp_path / "nothing-yet") == set()
    r0, r1 = _row(seed=0), _row(seed=1)
    p0 = save_predictions(tmp_path, r0.cell_id, ["a"], np.array([1]), np.array([[0.1, 0.9]]), {})
    p1 = save_predictions(tmp_path, r1.cell_id, ["a"], np.array([1]), np.array([[0.1, 0.9]]), {})
    append_rows(tmp_path, [dataclasses.replace(r0, predictions=p0), dataclasses.replace(r1, predictions=p1)])
    assert done_cells(tmp_path) == {r0.cell_id, r1.cell_id}
    (tmp_path / p1).unlink()  # rows without their evidence: the cell must run again
    assert done_cells(tmp_path) == {r0.cell_id}


# ------------------------------------------------------------------------------------------------ predictions


def test_predictions_round_trip_without_pickle(tmp_path: Path) -> None:
    cid = cell_id(**CELL)
    meta = {"task": "multiclass", "class_names": ["a", "b", "c"], "n": np.int64(3)}
    score = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    rel = save_predictions(tmp_path, cid, np.array(["img_1", "img_2"], dtype=object), np.array([0, 2]), score, meta)
    assert rel == f"predictions/{cid}.npz"
    with np.load(tmp_path / rel, allow_pickle=False) as z:
        assert z["ids"].dtype.kind == "U" and z["meta"].dtype.kind == "U"
    p = load_predictions(tmp_path / rel)
    assert p.ids.tolist() == ["img_1", "img_2"]
    assert p.y_true.tolist() == [0, 2] and np.array_equal(p.y_score, score)
    assert p.meta == {"task": "multiclass", "class_names": ["a", "b", "c"], "n": 3}
    assert p.task == "multiclass" and p.class_names == ["a", "b", "c"]


def test_predictions_reject_bad_input(tmp_path: Path) -> None:
    ok = dict(ids=["a", "b"], y_true=np.array([0, 1]), y_score=np.array([[0.5, 0.5], [0.2, 0.8]]), meta={})
    with pytest.raises(ResultsError, match="safe file name"):
        save_predictions(tmp_path, "../escape", **ok)
    with pytest.raises(ResultsError, match="one N"):
        save_predictions(tmp_path, "c1", **{**ok, "y_true": np.array([0, 1, 1])})
    with pytest.raises(ResultsError, match="not unique"):
        save_predictions(tmp_path, "c1", **{**ok, "ids": ["a", "a"]})
    with pytest.raises(ResultsError, match="JSON"):
        save_predictions(tmp_path, "c1", **{**ok, "meta": {"x": object()}})
    with pytest.raises(ResultsError, match="does not exist"):
        load_predictions(tmp_path / "predictions" / "nope.npz")


def test_tables_written_before_a_column_was_added_read_with_its_default(tmp_path: Path) -> None:
    rows = [_row(), _row(value=1 / 3, probe="knn")]
    append_rows(tmp_path, rows)
    compact_results(tmp_path)
    current = read_results(tmp_path)
    old = pd.read_parquet(tmp_path / "results.parquet").drop(columns=list(ADDED_COLUMNS))
    old.to_csv(tmp_path / "old.csv", index=False)
    old.to_parquet(tmp_path / "old.parquet", index=False)
    for path in ("old.csv", "old.parquet"):
        read = read_results(tmp_path / path)
        assert list(read.columns) == list(COLUMNS) and not read["imagenet_baseline"].any()
        pd.testing.assert_frame_equal(read.drop(columns=list(ADDED_COLUMNS)), current.drop(columns=list(ADDED_COLUMNS)))
    with pytest.raises(ResultsError, match="missing columns: seed"):  # only added columns have a default
        validate(old.drop(columns=["seed"]))

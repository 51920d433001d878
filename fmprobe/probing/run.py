"""`fmprobe probe`: fit every cell of a plan on cached features and append result rows (resumable by cell).

A cell is (feature file, readout, probe, train fraction or k shots per class, repeat). Plan, then execute:
:class:`~fmprobe.probing.grid.ProbeGrid` is what to cross with every feature file (its field defaults are the
library's), :func:`~fmprobe.probing.plan.plan_probing` lists the cells still to run, and :func:`run_probing` fits
them, one result part per cell, compacting the results table once at the end. Each cell fits on the rows
:mod:`~fmprobe.probing.sampling` draws, chooses its hyper-parameters on validation only, and touches the test split
once, to be scored by :mod:`~fmprobe.probing.scoring` (bootstrap CIs; per-sample predictions saved so any number
can be recomputed).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmprobe._io import accepts_renamed
from fmprobe.errors import FmprobeError, ProbeError
from fmprobe.metrics import MetricValue, compute_all
from fmprobe.probes import ProbeBase, ProbeCannotFit, is_stochastic, make_probe
from fmprobe.probing.grid import GRID_RENAMED, ProbeGrid
from fmprobe.probing.plan import ProbeCell, ProbePlan, amount_label, plan_probing
from fmprobe.probing.sampling import training_rows, validation_rows
from fmprobe.probing.scoring import (
    Slice,
    argmax_metric,
    missing_slices,
    primary_of,
    score_test,
    subgroup_slices,
    validation_threshold,
)
from fmprobe.progress import progress as progress_bar
from fmprobe.results import (
    CellInfo,
    append_rows,
    check_writable,
    compact_results,
    load_predictions,
    overall,
    read_results,
    rows_for_cell,
    test_set_digest,
    write_cell,
)
from fmprobe.store import FeatureFile, SplitFeatures
from fmprobe.tasks import SPLIT_NAMES, TEST, TRAIN, VAL

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ProbeRun:
    """What a probing run did (counts) and where its rows are; ``results`` reads them as a DataFrame."""

    results_dir: Path
    cells_run: int
    cells_skipped: int
    rows_written: int

    @property
    def results(self) -> pd.DataFrame:
        """Every row in the results folder (this run's and earlier ones'), as :func:`fmprobe.read_results` gives them."""
        return read_results(self.results_dir)


def run_probing(plan: ProbePlan, progress: bool = True) -> ProbeRun:
    """Fit the plan's cells, one result part per cell, then compact the results table (also after a failure)."""
    if plan.skipped:
        log.info(
            f"{plan.skipped} of {plan.skipped + len(plan.cells)} cells already in {plan.results_dir}; "
            f"running {len(plan.cells)} (use --force to redo them)"
        )
    if plan.part[1] > 1:
        log.info(f"shard {plan.part[0]}/{plan.part[1]}: {len(plan.cells)} cell(s) to run, dealt by cell id")
    if plan.rescore:
        log.info(
            f"{len(plan.rescore)} finished cells lack the rows of --subgroups {','.join(plan.grid.subgroups)}: "
            "slicing their saved test predictions (no refit)"
        )
    if plan.cells or plan.rescore:
        check_writable(plan.results_dir)  # before any fit: a read-only or full --out would lose every cell's work
    rows_written = _rescore(plan)
    loaded: dict[tuple[Path, str], dict[str, SplitFeatures]] = {}
    bar = progress_bar(plan.cells, unit="cell", desc="probing", disable=not progress)
    try:
        for cell in bar:
            info = cell.info
            bar.set_postfix_str(
                f"{info.dataset} {info.backbone} {info.readout} {info.probe} {amount_label(info)}#{info.repeat}"
            )
            key = (cell.features.path, info.readout)
            if key not in loaded:
                loaded.clear()  # one file's splits in memory at a time
                loaded[key] = {s: cell.features.load(s, info.readout) for s in SPLIT_NAMES}
            rows_written += _run_cell(cell, loaded[key], plan.grid, plan.results_dir)
    except BaseException:
        with contextlib.suppress(FmprobeError):  # keep the finished cells; the first error is the one to report
            compact_results(plan.results_dir)
        raise
    finally:
        bar.close()
    compact_results(plan.results_dir)
    return ProbeRun(plan.results_dir, len(plan.cells), plan.skipped, rows_written)


@accepts_renamed(GRID_RENAMED)
def probe_features(
    features: Sequence[str | Path],
    *,
    probes: Sequence[str] | None = None,
    readouts: Sequence[str] | None = None,
    train_fractions: Sequence[float] | None = None,
    shots: Sequence[int] | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    n_bootstrap: int | None = None,
    probe_params: Mapping[str, Mapping[str, object]] | Sequence[str] | None = None,
    val_subsample: str | None = None,
    subgroups: Sequence[str] | None = None,
    subgroup_min_size: int | None = None,
    bands: Mapping[str, Sequence[float]] | None = None,
    out: str | Path = "results",
    force: bool = False,
    progress: bool = True,
    shard: str | tuple[int, int] | None = None,
) -> ProbeRun:
    """Probe every feature file x readout x probe x (train fraction or shots) x repeat; skip cells already in ``out``.

    Probing is cheap next to extraction, so it is run as a grid over cached features: each cell chooses its
    hyper-parameters on validation only and touches test once, and writes its rows and predictions as it finishes,
    so an interrupted run resumes by cell. The grid options default (None) to :class:`~fmprobe.ProbeGrid`'s fields.
    Messages go to the ``fmprobe.probing`` logger. The old keyword ``n_resamples`` still works, with a
    ``DeprecationWarning``.

    Parameters
    ----------
    features : sequence of str or Path
        Feature files (``.h5``) or folders of them.
    probes : sequence of str or None, optional
        Probe names (``logreg``, ``knn``, ``lgbm``, ...; see :func:`fmprobe.make_probe`).
    readouts : sequence of str or None, optional
        Readouts to probe (default: every one stored in each file).
    train_fractions : sequence of float or None, optional
        Fractions of the training labels, each in (0, 1].
    shots : sequence of int or None, optional
        Few-shot cells next to the fractions: k labelled training images per class for each k.
    repeats : int or None, optional
        Repeats (seeds and subsamples) for fractions < 1, shots and stochastic probes.
    seed : int or None, optional
        The base seed.
    n_bootstrap : int or None, optional
        Bootstrap resamples per confidence interval (``--bootstrap``; 0: no intervals).
    probe_params : mapping or sequence of str or None, optional
        Probe parameters: ``{"lgbm": {"n_jobs": 1}}`` or ``["lgbm.n_jobs=1"]`` (``--probe-param``).
    val_subsample : str or None, optional
        ``proportional`` or ``full``: the validation rows that tune a fraction cell.
    subgroups : sequence of str or None, optional
        Test-metadata attributes (e.g. ``["sex", "age_band"]``) every cell is also scored per value of.
    subgroup_min_size : int or None, optional
        Test rows a subgroup needs for a number.
    bands : mapping or None, optional
        Edges of derived ``<key>_band`` attributes, e.g. ``{"age": [40, 60, 80]}``.
    out : str or Path, optional
        The results folder (``results.csv``, ``results.parquet``, ``predictions/``).
    force : bool, optional
        Redo cells already in ``out``.
    progress : bool, optional
        Show the progress bar; the inverse of the CLI's ``--quiet``.
    shard : str or tuple of int or None, optional
        ``"I/N"``: only the cells dealt to shard I (N such processes may append into one ``out`` at once).

    Returns
    -------
    ProbeRun
        The counts (``cells_run``, ``cells_skipped``, ``rows_written``), ``results_dir`` and ``results``, every row
        in the folder as a DataFrame.

    Raises
    ------
    fmprobe.errors.FmprobeError
        An unknown probe or parameter, a bad grid value, or no feature files found (before any fit).
    fmprobe.errors.ProbeError
        A probe failed on a cell (the message names the file, readout and probe).

    Examples
    --------
    >>> from fmprobe import probe_features
    >>> run = probe_features(["features/demo-v2-150x4-seed0"], probes=["logreg", "knn"],
    ...                      train_fractions=[0.1, 1.0], n_bootstrap=200, out="results")  # doctest: +SKIP
    >>> run.cells_run, run.results.columns[:3].tolist()  # doctest: +SKIP
    """
    grid = ProbeGrid.from_options(
        probes=probes, readouts=readouts, train_fractions=train_fractions, shots=shots, repeats=repeats, seed=seed,
        n_bootstrap=n_bootstrap, probe_params=probe_params, val_subsample=val_subsample, subgroups=subgroups,
        subgroup_min_size=subgroup_min_size, bands=bands,
    )  # fmt: skip
    return run_probing(plan_probing(features, grid, out, force, shard), progress)


def _cell_probe(info: CellInfo, features: FeatureFile, grid: ProbeGrid, seed: int) -> ProbeBase:
    params: dict[str, object] = {"task": info.task, **grid.probe_params.get(info.probe, {})}
    if info.task != "multilabel":
        params["classes"] = np.arange(len(features.class_names))
    probe = make_probe(info.probe, **params)
    if is_stochastic(probe):
        probe.set_params(random_state=seed)
    return probe


def _cannot_fit(
    cell: ProbeCell, test: SplitFeatures, err: ProbeCannotFit, n_train: int, n_val: int, grid: ProbeGrid, out: Path
) -> int:
    """Record a cell whose probe learned nothing scorable: every metric missing with the reason, no predictions
    file (``predictions`` empty), so the cell counts as done and no chance-level number is ever reported."""
    info, features = cell.info, cell.features
    primary = primary_of(info, features)
    width = test.labels.shape[1] if test.labels.ndim == 2 else len(features.class_names)
    uniform = np.full((len(test.labels), width), 0.5 if info.task == "multilabel" else 1.0 / width)
    named = compute_all(
        test.labels, uniform, info.task, label_names=features.class_names,
        label_sets=features.evaluation.get("label_sets"),
    )
    names = list(named) + ([argmax_metric(primary)] * (info.task == "ordinal"))
    reason = f"the probe could not fit: {err}"
    log.warning(
        f"{features.path} ({info.readout}, {info.probe}, fraction {info.train_fraction}): {reason}; recorded as missing"
    )
    shared = dict(primary=primary, params={}, n_train=n_train, val_score=None, n_val=n_val,
                  test_set=test_set_digest(test.ids))  # fmt: skip
    rows = rows_for_cell(info, {name: MetricValue(None, reason) for name in names}, n_test=len(test.labels), **shared)
    for subgroup, n, values in missing_slices(grid, primary, reason):
        rows += rows_for_cell(info, values, n_test=n, subgroup=subgroup, **shared)
    append_rows(out, rows)
    return len(rows)


def _run_cell(cell: ProbeCell, splits: dict[str, SplitFeatures], grid: ProbeGrid, out: Path) -> int:
    """Fit one cell on (a subsample of) train, choose on (a subsample of) val, score test once; write it; return
    its row count."""
    train, val, test = splits[TRAIN], splits[VAL], splits[TEST]
    info, features = cell.info, cell.features
    cell_seed = grid.seed + 1000 * info.repeat
    index = training_rows(train, info, cell_seed)
    val_index = validation_rows(val, info, grid, cell_seed, len(index) / len(train.labels))
    probe = _cell_probe(info, features, grid, cell_seed)
    try:
        probe.fit(train.features[index], train.labels[index], eval_set=(val.features[val_index], val.labels[val_index]))
    except ProbeCannotFit as err:
        return _cannot_fit(cell, test, err, len(index), len(val_index), grid, out)
    except ProbeError as err:
        raise ProbeError(f"{features.path} ({info.readout}, {info.probe}, {amount_label(info)}): {err}") from err
    scored = score_test(probe, test, info, features, grid)
    meta = {"task": info.task, "class_names": list(features.class_names), "dataset": info.dataset,
            "backbone": info.backbone, "readout": info.readout, "probe": info.probe, "feature_file": str(features.path)}  # fmt: skip
    if scored.y_pred is not None:  # the decoded grades the label metrics used (y_score's argmax is not them)
        meta["y_pred"] = scored.y_pred.tolist()
    params = dict(probe.best_params_)
    if info.task == "binary":  # the decision cut the report's confusion matrix uses, chosen on validation
        meta["threshold"] = validation_threshold(probe, val.features[val_index], val.labels[val_index])
        if meta["threshold"]["youden_val"] is not None:
            params["youden_threshold"] = meta["threshold"]["youden_val"]
    ids, y_true = (test.ids, test.labels) if scored.ids is None else (scored.ids, scored.y_true)
    rows = write_cell(
        out, info, scored.metrics, ids=ids, y_true=y_true, y_score=scored.scores, meta=meta,
        primary=primary_of(info, features), params=params, n_train=len(index), val_score=probe.val_score_,
        n_val=len(val_index), flags=scored.flags, subgroups=scored.subgroups,
    )  # fmt: skip
    return len(rows)


def _rescore(plan: ProbePlan) -> int:
    """Write the subgroup rows of finished cells that lack them (``plan.rescore``) from their saved predictions and
    the feature file's test metadata: nothing is refitted; the other fields are the cell's own rows'. Returns the
    rows written."""
    if not plan.rescore:
        return 0
    table = overall(read_results(plan.results_dir))
    written, tests = 0, {}
    for cell in plan.rescore:
        info, features = cell.info, cell.features
        own = table[table["cell_id"] == info.cell_id]
        row = own.iloc[0]
        primary = primary_of(info, features)
        if row["predictions"]:
            if features.path not in tests:
                tests = {features.path: features.load(TEST)}  # one file's test split in memory at a time
            slices = _saved_slices(cell, tests[features.path], row["predictions"], list(own["metric"]), plan.grid)
        else:  # the probe could not fit: every metric is missing, and so is every attribute's summary
            slices = missing_slices(plan.grid, primary, str(row["missing_reason"]))
        shared = dict(primary=primary, params=json.loads(row["params"]), n_train=int(row["n_train"]),
                      val_score=float(row["val_score"]), predictions=row["predictions"], n_val=int(row["n_val"]),
                      flags=row["flags"], test_set=row["test_set"])  # fmt: skip
        rows = [r for sub, n, values in slices for r in rows_for_cell(info, values, n_test=n, subgroup=sub, **shared)]
        written += len(append_rows(plan.results_dir, rows))
    return written


def _saved_slices(cell: ProbeCell, test: SplitFeatures, path: str, names: list[str], grid: ProbeGrid) -> list[Slice]:
    pred = load_predictions(path)
    return subgroup_slices(
        test, pred.ids, pred.y_true, pred.y_score, pred.y_pred, names, cell.info, cell.features, grid
    )  # fmt: skip

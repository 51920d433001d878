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
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fmprobe.errors import FmprobeError, ProbeError
from fmprobe.metrics import MetricValue, compute_all
from fmprobe.probes import ProbeBase, ProbeCannotFit, is_stochastic, make_probe
from fmprobe.probing.grid import ProbeGrid
from fmprobe.probing.plan import ProbeCell, ProbePlan, amount_label, plan_probing
from fmprobe.probing.sampling import training_rows, validation_rows
from fmprobe.probing.scoring import argmax_metric, score_test, validation_threshold
from fmprobe.results import (
    CellInfo,
    append_rows,
    check_writable,
    compact_results,
    rows_for_cell,
    test_set_digest,
    write_cell,
)
from fmprobe.store import FeatureFile, SplitFeatures
from fmprobe.tasks import PRIMARY_METRIC, SPLIT_NAMES, TEST, TRAIN, VAL

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ProbeRun:
    results_dir: Path
    cells_run: int
    cells_skipped: int
    rows_written: int


def run_probing(plan: ProbePlan, progress: bool = True) -> ProbeRun:
    """Fit the plan's cells, one result part per cell, then compact the results table (also after a failure)."""
    if plan.skipped:
        log.info(
            f"{plan.skipped} of {plan.skipped + len(plan.cells)} cells already in {plan.results_dir}; "
            f"running {len(plan.cells)} (use --force to redo them)"
        )
    if plan.part[1] > 1:
        log.info(f"shard {plan.part[0]}/{plan.part[1]}: {len(plan.cells)} cell(s) to run, dealt by cell id")
    if plan.cells:
        check_writable(plan.results_dir)  # before any fit: a read-only or full --out would lose every cell's work
    rows_written = 0
    loaded: dict[tuple[Path, str], dict[str, SplitFeatures]] = {}
    bar = tqdm(plan.cells, unit="cell", desc="probing", disable=not progress, file=sys.stderr, dynamic_ncols=True)
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


def probe_features(
    features: Sequence[str | Path],
    *,
    probes: Sequence[str] | None = None,
    readouts: Sequence[str] | None = None,
    train_fractions: Sequence[float] | None = None,
    shots: Sequence[int] | None = None,
    repeats: int | None = None,
    seed: int | None = None,
    n_resamples: int | None = None,
    probe_params: Mapping[str, Mapping[str, object]] | None = None,
    val_subsample: str | None = None,
    out: str | Path = "results",
    force: bool = False,
    progress: bool = True,
    shard: str | tuple[int, int] | None = None,
) -> ProbeRun:
    """Probe every feature file x readout x probe x (train fraction or shots) x repeat; skip cells already in ``out``.
    ``shard="I/N"`` runs only the cells dealt to shard I (N such processes may append into one ``out`` at once).

    The grid options default (None) to :class:`ProbeGrid`'s fields. Messages go to the ``fmprobe.probing``
    logger.
    """
    grid = ProbeGrid.from_options(
        probes=probes, readouts=readouts, train_fractions=train_fractions, shots=shots, repeats=repeats, seed=seed,
        n_resamples=n_resamples, probe_params=probe_params, val_subsample=val_subsample,
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


def _cannot_fit(cell: ProbeCell, test: SplitFeatures, err: ProbeCannotFit, n_train: int, n_val: int, out: Path) -> int:
    """Record a cell whose probe learned nothing scorable: every metric missing with the reason, no predictions
    file (``predictions`` empty), so the cell counts as done and no chance-level number is ever reported."""
    info, features = cell.info, cell.features
    primary = features.primary_metric or PRIMARY_METRIC[info.task]
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
    rows = rows_for_cell(
        info, {name: MetricValue(None, reason) for name in names}, primary=primary, params={}, n_train=n_train,
        n_test=len(test.labels), val_score=None, n_val=n_val, test_set=test_set_digest(test.ids),
    )  # fmt: skip
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
        return _cannot_fit(cell, test, err, len(index), len(val_index), out)
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
        primary=features.primary_metric or PRIMARY_METRIC[info.task], params=params,
        n_train=len(index), val_score=probe.val_score_, n_val=len(val_index), flags=scored.flags,
    )  # fmt: skip
    return len(rows)

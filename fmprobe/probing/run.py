"""`fmprobe probe`: fit every requested probe on cached features and append result rows (resumable by cell).

A cell is (feature file, readout, probe, train fraction or k shots per class, repeat). Hyper-parameters are chosen on the validation
split only; the test split is touched once, after fitting, to score the chosen model. Every test metric gets a
stratified bootstrap CI, and the per-sample predictions are saved so any number can be recomputed.

Plan, then execute: :class:`~fmprobe.probing.grid.ProbeGrid` is what to cross with every feature file (its field
defaults are the library's defaults), :func:`plan_probing` lists the cells still to run (a value to print or
inspect), and :func:`run_probing` fits them, one result part per cell, compacting the results table once at the end.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from fmprobe.errors import FmprobeError, ProbeError
from fmprobe.metrics import MetricValue, compute_all
from fmprobe.metrics.aggregate import Aggregated, max_over_views
from fmprobe.probes import ProbeBase, ProbeCannotFit, is_stochastic, make_probe
from fmprobe.probing.grid import ProbeGrid, ValSubsample, cell_repeats
from fmprobe.results import (
    CellInfo,
    append_rows,
    check_writable,
    compact_results,
    done_cells,
    read_results,
    rows_for_cell,
    test_set_digest,
    write_cell,
)
from fmprobe.store import FeatureFile, SplitFeatures
from fmprobe.tasks import GROUP, PRIMARY_METRIC, SPLIT_NAMES, STUDY, TEST, TRAIN, VAL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeCell:
    """One cell to run: which feature file, and the cell's identity (readout, probe, fraction, repeat, seed)."""

    features: FeatureFile
    info: CellInfo


@dataclass(frozen=True)
class ProbePlan:
    """The cells :func:`run_probing` will fit, and how many of the grid's cells are already in ``results_dir``."""

    results_dir: Path
    grid: ProbeGrid
    cells: tuple[ProbeCell, ...]
    skipped: int


@dataclass(frozen=True)
class ProbeRun:
    results_dir: Path
    cells_run: int
    cells_skipped: int
    rows_written: int


def find_feature_files(paths: Iterable[str | Path]) -> list[Path]:
    """Feature files named directly, or all ``*.h5`` below the folders given (sorted, no duplicates)."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(path.rglob("*.h5")))
        elif path.exists():
            found.append(path)
        else:
            raise FmprobeError(f"{path}: no such feature file or folder. `fmprobe extract` prints the paths it writes.")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise FmprobeError(f"no feature files (*.h5) in {', '.join(map(str, paths))}; run `fmprobe extract` first.")
    return unique


def subsample(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the training set (every class keeps at least one sample).

    Multilabel rows are stratified by their first positive label (a missing entry, -1, counts as 0).
    """
    if fraction >= 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    if labels.ndim == 1:
        strata = labels
    else:
        positive = labels > 0  # -1 (missing) and 0 are both "not positive" for the stratum key
        strata = positive.argmax(axis=1) * positive.any(axis=1)
    chosen = []
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        take = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


def _amount(info: CellInfo) -> str:
    """How much training data a cell uses, for messages: ``fraction 0.1`` or ``4 shots``."""
    return f"{info.shots} shots" if info.shots else f"fraction {info.train_fraction:g}"


def _weights_label(features: FeatureFile) -> str:
    return str(features.attrs.get("weights_label", "random" if features.backbone.endswith(":random") else "pretrained"))


def _imagenet_baseline(features: FeatureFile) -> bool:
    """Whether the extraction's backbone entry is registered as an ImageNet baseline (feature files written before
    the attribute existed say nothing: False, and the report then asks for ``--baseline``)."""
    return bool(features.attrs.get("imagenet_baseline", False))


def _readouts(features: FeatureFile, wanted: Sequence[str]) -> list[str]:
    chosen = list(wanted) or list(features.readouts)
    missing = [r for r in chosen if r not in features.readouts]
    if missing:
        raise FmprobeError(
            f"{features.path}: readout(s) {missing} not extracted; stored: {', '.join(features.readouts)}."
        )
    return chosen


def _cells_of(features: FeatureFile, grid: ProbeGrid) -> list[ProbeCell]:
    """Every cell of one feature file, in run order (readout, probe, fraction then shots, repeat).

    A k-shot cell's ``train_fraction`` is the fraction of the training split it fits on (k x classes / N), so
    the row says how much data it used; its ``shots`` keeps it off every fraction axis."""
    amounts = [(fraction, 0) for fraction in grid.train_fractions]
    amounts += [(fraction, k) for k, fraction in _shot_fractions(features, grid.shots).items()]
    return [
        ProbeCell(
            features,
            CellInfo(
                dataset=features.dataset,
                task=features.task,
                backbone=features.backbone,
                weights=_weights_label(features),
                readout=readout,
                resolution=features.resolution,
                probe=probe,
                train_fraction=fraction,
                repeat=repeat,
                seed=grid.seed,
                fingerprint=features.key,
                imagenet_baseline=_imagenet_baseline(features),
                shots=shots,
                val_subsample=_val_subsample(grid, fraction),
            ),  # fmt: skip
        )
        for readout in _readouts(features, grid.readouts)
        for probe in grid.probes
        for fraction, shots in amounts
        for repeat in range(cell_repeats(probe, fraction, grid.repeats, shots))
    ]


def _val_subsample(grid: ProbeGrid, fraction: float) -> str:
    """The cell's validation protocol when it is not "all of validation" (part of its id, see ``cell_id``)."""
    return str(ValSubsample(grid.val_subsample).value) if fraction < 1 and grid.val_subsample != ValSubsample.full else ""


def shot_capacity(labels: np.ndarray, groups: np.ndarray | None, n_classes: int) -> np.ndarray:
    """Per class code ``0..n_classes-1``: how many shots it can give (distinct groups, or images without groups)."""
    if groups is None:
        return np.bincount(labels, minlength=n_classes)[:n_classes]
    return np.array([len(np.unique(groups[labels == c])) for c in range(n_classes)])


def _shot_fractions(features: FeatureFile, shots: Sequence[int]) -> dict[int, float]:
    """k -> the fraction of the training split a k-shot cell uses; refuses, before any fit, a task without classes
    (multilabel) and a class with fewer than k images (or patients/lesions, where the split records groups)."""
    if not shots:
        return {}
    if features.task == "multilabel":
        raise FmprobeError(
            f"{features.path}: --shots draws k images per class, and a multilabel task has no classes to draw them "
            "from (an image is positive for several labels). Use --train-fraction for multilabel datasets."
        )
    train = features.load(TRAIN)
    groups = train.metadata.get(GROUP)
    capacity = shot_capacity(train.labels.astype(np.int64), groups, len(features.class_names))
    worst = int(np.argmin(capacity))
    if capacity[worst] < max(shots):
        unit = "different patients/lesions (groups)" if groups is not None else "training images"
        raise FmprobeError(
            f"{features.path}: --shots {max(shots)} needs {max(shots)} {unit} per class, but class "
            f"{features.class_names[worst]!r} has {int(capacity[worst])}. Use --shots up to {int(capacity[worst])}."
        )
    return {k: k * len(features.class_names) / len(train.labels) for k in shots}


def plan_probing(features: Sequence[str | Path], grid: ProbeGrid, out: str | Path, force: bool = False) -> ProbePlan:
    """The cells of ``grid`` over the feature files that ``out`` does not hold yet (all of them with ``force``).

    Reads only the feature files' headers and the results table; names and readouts fail here, before any fit.
    """
    out = Path(out)
    cells = [cell for path in find_feature_files(features) for cell in _cells_of(FeatureFile(path), grid)]
    finished = set() if force else done_cells(out)
    todo = tuple(c for c in cells if c.info.cell_id not in finished)
    if not force:
        _refuse_earlier_protocol(out, {c.info.cell_id for c in cells} & finished)
    return ProbePlan(out, grid, todo, len(cells) - len(todo))


def _refuse_earlier_protocol(out: Path, kept: set[str]) -> None:
    """Refuse to keep cells an fmprobe before the current probing protocol wrote (their rows record no ``n_val``):
    skipped as done, they would sit in one table beside new cells computed another way."""
    if not kept:
        return
    rows = read_results(out)
    earlier = sorted(set(rows.loc[rows["cell_id"].isin(kept) & (rows["n_val"] < 0), "cell_id"]))
    if earlier:
        raise FmprobeError(
            f"{out}: {len(earlier)} of the cells to run were written by an earlier fmprobe (their rows record no "
            "validation size), whose protocol differs: LightGBM's rounds were tuned on validation, ordinal grades "
            "were decoded by argmax, low-label cells were tuned on all of validation. Kept, they would be compared "
            f"with cells computed the new way. Probe into a new --out, or pass --force to redo them in {out}."
        )


def run_probing(plan: ProbePlan, progress: bool = True) -> ProbeRun:
    """Fit the plan's cells, one result part per cell, then compact the results table (also after a failure)."""
    if plan.skipped:
        log.info(
            f"{plan.skipped} of {plan.skipped + len(plan.cells)} cells already in {plan.results_dir}; "
            f"running {len(plan.cells)} (use --force to redo them)"
        )
    if plan.cells:
        check_writable(plan.results_dir)  # before any fit: a read-only or full --out would lose every cell's work
    rows_written = 0
    loaded: dict[tuple[Path, str], dict[str, SplitFeatures]] = {}
    bar = tqdm(plan.cells, unit="cell", desc="probing", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        for cell in bar:
            info = cell.info
            bar.set_postfix_str(
                f"{info.dataset} {info.backbone} {info.readout} {info.probe} {_amount(info)}#{info.repeat}"
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
) -> ProbeRun:
    """Probe every feature file x readout x probe x (train fraction or shots) x repeat; skip cells already in ``out``.

    The grid options default (None) to :class:`ProbeGrid`'s fields. Messages go to the ``fmprobe.probing``
    logger.
    """
    grid = ProbeGrid.from_options(
        probes=probes, readouts=readouts, train_fractions=train_fractions, shots=shots, repeats=repeats, seed=seed,
        n_resamples=n_resamples, probe_params=probe_params, val_subsample=val_subsample,
    )  # fmt: skip
    return run_probing(plan_probing(features, grid, out, force), progress)


@dataclass(frozen=True)
class Scored:
    """A fitted cell's test outcome: scores, the metrics (values or reasons), and warnings for the row.

    ``ids`` and ``y_true`` are the rows the metrics were computed on (and the predictions file holds) when they
    are not the test split's own (per-study aggregation); None means the test split's."""

    scores: np.ndarray
    metrics: dict[str, object]
    flags: str = ""
    y_pred: np.ndarray | None = None  # decoded class codes (ordinal tasks), saved with the predictions
    ids: np.ndarray | None = None
    y_true: np.ndarray | None = None



def shot_rows(labels: np.ndarray, shots: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Indices of ``shots`` training rows per class, each from a different group where ``groups`` are given.

    Per class: one random image of every group (every image without groups), the groups in a random order, the
    first ``shots`` taken. The random order does not depend on ``shots``, so with one seed the draws are nested
    (the 2-shot set holds the 1-shot set): a curve over k changes only the added images."""
    rng = np.random.default_rng(seed)
    chosen = []
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        if groups is not None:  # the first (random) image of each group, the groups then in random order
            _, first = np.unique(groups[members], return_index=True)
            members = members[rng.permutation(first)]
        chosen.append(members[:shots])
    return np.sort(np.concatenate(chosen))


def training_rows(train: SplitFeatures, info: CellInfo, seed: int) -> np.ndarray:
    """Indices of the training rows a cell fits on: ``shots`` per class (one per patient/lesion where the split
    records groups) for a few-shot cell, else a stratified ``train_fraction`` of the training set."""
    if info.shots:
        return shot_rows(train.labels, info.shots, seed, train.metadata.get(GROUP))
    return subsample(train.labels, info.train_fraction, seed)


def validation_rows(
    val: SplitFeatures, info: CellInfo, grid: ProbeGrid, seed: int, used_fraction: float = 1.0
) -> np.ndarray:
    """Indices of the validation rows a cell's configuration is chosen on.

    With ``grid.val_subsample`` ``proportional`` (the default; the cell's id records it, see ``_val_subsample``) a cell fitted on ``used_fraction`` of the training
    rows is tuned on a seeded stratified subsample of validation of that fraction, so that a low-label number is
    not chosen with far more labelled data than a low-label study would have. Every class present in validation
    stays present (multilabel: every label's positives and negatives), so the selection metric stays defined;
    where validation has groups (``GROUP`` metadata: patients, lesions) whole groups are drawn. ``full``, or a
    cell on all the training rows: every validation row.
    """
    n = len(val.labels)
    if grid.val_subsample is ValSubsample.full or used_fraction >= 1.0:
        return np.arange(n)
    groups = val.metadata.get(GROUP)
    unit = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    first_rows = np.unique(unit, return_index=True)[1]  # a group is stratified by its first row's label
    chosen = np.zeros(len(first_rows), dtype=bool)
    chosen[subsample(val.labels[first_rows], used_fraction, seed)] = True
    facets = val.labels[:, None] == np.unique(val.labels)[None, :] if val.labels.ndim == 1 else (
        np.concatenate([val.labels == 1, val.labels == 0], axis=1))  # fmt: skip
    unit_facets = np.zeros((len(first_rows), facets.shape[1]), dtype=bool)
    np.logical_or.at(unit_facets, unit, facets)
    rng = np.random.default_rng(seed + 1)
    for column in range(facets.shape[1]):  # a class (or a label's positives/negatives) the draw missed: add a unit
        if not unit_facets[chosen, column].any():
            chosen[rng.choice(np.flatnonzero(unit_facets[:, column]))] = True
    return np.flatnonzero(chosen[unit])


def _cell_probe(info: CellInfo, features: FeatureFile, grid: ProbeGrid, seed: int) -> ProbeBase:
    params: dict[str, object] = {"task": info.task, **grid.probe_params.get(info.probe, {})}
    if info.task != "multilabel":
        params["classes"] = np.arange(len(features.class_names))
    probe = make_probe(info.probe, **params)
    if is_stochastic(probe):
        probe.set_params(random_state=seed)
    return probe


def argmax_metric(primary: str) -> str:
    """The row name of an ordinal cell's primary metric under argmax decoding (parity with the study)."""
    return f"{primary}[argmax]"


def degenerate_flag(y_true: np.ndarray, scores: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> str:
    """A warning when the test predictions carry no information: constant predictions (multilabel: every label's
    score constant across samples), or single-label accuracy equal to the test set's majority-class rate."""
    if y_true.ndim == 2:
        constant = bool(np.all(np.ptp(scores, axis=0) <= 1e-12))
        return "degenerate: every label's test score is the same for every sample" if constant else ""
    accuracy = float(np.mean(y_pred == y_true))
    majority = float(np.bincount(y_true, minlength=scores.shape[1]).max() / len(y_true))
    if len(np.unique(y_pred)) == 1:
        name = class_names[int(y_pred[0])] if int(y_pred[0]) < len(class_names) else str(int(y_pred[0]))
        return (
            f"degenerate: every test prediction is class {name} (accuracy {accuracy:.3f}, majority rate {majority:.3f})"
        )
    if np.isclose(accuracy, majority):
        return f"degenerate: test accuracy equals the majority-class rate {majority:.3f}"
    return ""


def evaluation_rows(test: SplitFeatures, scores: np.ndarray, features: FeatureFile) -> Aggregated:
    """The rows the test metrics are computed on: the test images, or one row per study (max over its views) when
    the dataset asks for it (``evaluation["aggregate"] == "study"``, CheXpert's ``?aggregate=study``)."""
    aggregate = features.evaluation.get("aggregate", "image")
    if aggregate == "image":
        return Aggregated(test.ids, test.labels, scores, "")
    if aggregate != "study" or STUDY not in test.metadata:
        raise FmprobeError(
            f"{features.path}: the dataset asks for aggregate={aggregate!r} scoring but "
            + ("only 'image' and 'study' exist" if aggregate != "study" else "the test split has no study metadata")
            + "; extract the features again with this fmprobe (`fmprobe extract ... --force`)."
        )
    return max_over_views(test.metadata[STUDY], test.labels, scores)


def scored_metrics(
    test: SplitFeatures, scores: np.ndarray, info: CellInfo, features: FeatureFile, grid: ProbeGrid,
    y_pred: np.ndarray | None = None, flags: str = "",
) -> Scored:  # fmt: skip
    """Every test metric with its bootstrap CI, on the rows :func:`evaluation_rows` gives; multilabel cells also get
    one ``roc_auc[<label>]`` per class name and one ``roc_auc[<set>]`` per ``evaluation["label_sets"]`` entry."""
    rows = evaluation_rows(test, scores, features)
    if rows.detail and y_pred is not None:
        raise FmprobeError(f"{features.path}: decoded predictions cannot be scored {rows.detail.split(' (')[0]}.")
    values = compute_all(
        rows.y_true, rows.y_score, info.task, n_resamples=grid.n_resamples, seed=grid.seed, y_pred=y_pred,
        label_names=features.class_names, label_sets=features.evaluation.get("label_sets"),
    )  # fmt: skip
    values = {name: replace(v, detail="; ".join(filter(None, (rows.detail, v.detail)))) for name, v in values.items()}
    return Scored(rows.y_score, values, flags, ids=rows.ids, y_true=rows.y_true)


def score_test(probe: ProbeBase, test: SplitFeatures, info: CellInfo, features: FeatureFile, grid: ProbeGrid) -> Scored:
    """Score the fitted probe once on the test split: every metric with its bootstrap CI. Ordinal cells are scored
    on the probe's decoded grades (``decoding`` in its params), plus the primary metric by argmax as
    ``<metric>[argmax]``; predictions that carry no information are flagged."""
    scores = probe.predict_proba(test.features)
    y_pred = probe.predict(test.features) if info.task == "ordinal" else None  # class codes: classes are 0..C-1
    scored = scored_metrics(test, scores, info, features, grid, y_pred=y_pred)
    if y_pred is not None:
        primary = features.primary_metric or PRIMARY_METRIC[info.task]
        argmax = compute_all(
            scored.y_true, scored.scores, info.task, metrics=[primary], n_resamples=grid.n_resamples, seed=grid.seed
        )[primary]
        scored.metrics[argmax_metric(primary)] = replace(argmax, detail=scored.metrics[primary].detail)
    shown = scored.scores.argmax(axis=1) if y_pred is None and scored.scores.ndim == 2 else y_pred
    flags = degenerate_flag(np.asarray(scored.y_true), scored.scores, shown, features.class_names)
    return replace(scored, flags=flags, y_pred=y_pred)


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
        raise ProbeError(f"{features.path} ({info.readout}, {info.probe}, {_amount(info)}): {err}") from err
    scored = score_test(probe, test, info, features, grid)
    meta = {"task": info.task, "class_names": list(features.class_names), "dataset": info.dataset,
            "backbone": info.backbone, "readout": info.readout, "probe": info.probe, "feature_file": str(features.path)}  # fmt: skip
    if scored.y_pred is not None:  # the decoded grades the label metrics used (y_score's argmax is not them)
        meta["y_pred"] = scored.y_pred.tolist()
    ids, y_true = (test.ids, test.labels) if scored.ids is None else (scored.ids, scored.y_true)
    rows = write_cell(
        out, info, scored.metrics, ids=ids, y_true=y_true, y_score=scored.scores, meta=meta,
        primary=features.primary_metric or PRIMARY_METRIC[info.task], params=probe.best_params_,
        n_train=len(index), val_score=probe.val_score_, n_val=len(val_index), flags=scored.flags,
    )  # fmt: skip
    return len(rows)

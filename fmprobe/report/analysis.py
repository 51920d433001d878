"""What the report says, computed from a results table: validation-only selection, tables, paired gains.

Vocabulary: a *model* is a backbone with its weights (``efficientnet_lite0_imagenet`` or
``efficientnet_lite0_imagenet:random``); a *configuration* adds readout, resolution and probe. Every choice
of configuration — for the headline, the curves and the confusion matrix — is made on the mean validation
score over repeats; test numbers are only ever reported, never used to choose.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from fmprobe.errors import FmprobeError, ResultsError
from fmprobe.metrics import CI_LEVEL, MetricUndefined, Prepared, get_metric, paired_bootstrap
from fmprobe.metrics.bootstrap import replicate
from fmprobe.registry import closest
from fmprobe.results import Predictions, load_predictions, overall, test_set_digest, with_added_columns

DEFAULT_WEIGHTS = frozenset({"", "pretrained", "default"})  # weights tags not worth printing
CONFIG = ["backbone", "weights", "readout", "resolution", "probe"]
ROW_KEY = ["model", "readout", "resolution"]


def suggest(name: str, choices: list[str]) -> str:
    """'Closest: a, b. ' for an error message ('' when nothing is close), the registry's notion of close."""
    near = closest(name, choices)
    return f"Closest: {', '.join(near)}. " if near else ""


def model_label(backbone: str, weights: str) -> str:
    """``backbone`` or ``backbone:weights`` for non-default weights (the timm ``name:tag`` convention)."""
    return backbone if weights in DEFAULT_WEIGHTS else f"{backbone}:{weights}"


def with_models(df: pd.DataFrame) -> pd.DataFrame:
    """The table plus a ``model`` column (working copy; never written back)."""
    out = df.copy()
    out["model"] = [model_label(b, w) for b, w in zip(out["backbone"], out["weights"], strict=True)]
    return out


def higher_is_better(metric: str) -> bool:
    try:
        return get_metric(metric).higher_is_better
    except Exception:  # a metric name this version does not know: the five built-ins are all "higher"
        return True


# ------------------------------------------------------------------------------------------------ datasets


@dataclass(frozen=True)
class DatasetView:
    """The primary-metric rows of one dataset and the facts every section needs.

    Two data axes: train fractions (rows with ``shots == 0``) and k shots per class (``shots > 0``). A few-shot
    row's ``train_fraction`` is the share of the training set it used, so it is never looked up by fraction:
    :meth:`at` returns fraction rows only and :meth:`at_shots` shot rows only."""

    name: str
    task: str
    metric: str
    rows: pd.DataFrame  # primary-metric rows, with a 'model' column
    fractions: tuple[float, ...]  # of the fraction rows only
    table_fraction: float  # 1.0 when present, else the largest fraction run
    shots: tuple[int, ...] = ()  # shots per class of the few-shot rows, ascending
    mixed_test_sets: str = ""  # the report's sentence when rows were scored on different test sets (allowed)

    def at(self, fraction: float) -> pd.DataFrame:
        """The fraction rows (never few-shot rows) at ``fraction``."""
        rows = self.rows[self.rows["shots"] == 0]
        return rows[np.isclose(rows["train_fraction"], fraction)]

    def at_shots(self, shots: int) -> pd.DataFrame:
        """The few-shot rows with ``shots`` labelled training images per class."""
        return self.rows[self.rows["shots"] == shots]


def dataset_views(df: pd.DataFrame, allow_different_test_sets: bool = False) -> list[DatasetView]:
    """One view per dataset; refuses a dataset whose rows were scored on different test sets (unless allowed:
    see :func:`check_test_sets`) or whose table cells would pool several feature caches (:func:`check_fingerprints`).
    Views hold the whole-test-set rows only (:func:`fmprobe.results.overall`); subgroup rows are read on their own."""
    df = with_models(overall(with_added_columns(df)))
    views = []
    for name in sorted(df["dataset"].unique()):
        d = df[df["dataset"] == name]
        prim = d[d["is_primary"]]
        if prim.empty:
            raise ResultsError(
                f"dataset {name!r} has no row with is_primary=True; the report needs the primary "
                "metric of every dataset."
            )
        metrics = sorted(prim["metric"].unique())
        if len(metrics) > 1:
            raise ResultsError(f"dataset {name!r} has several primary metrics ({', '.join(metrics)}); expected one.")
        fractions = tuple(sorted(float(f) for f in prim.loc[prim["shots"] == 0, "train_fraction"].unique()))
        if not fractions:
            raise ResultsError(
                f"dataset {name!r} has only few-shot rows; the report's tables compare configurations at a train "
                "fraction: run the fraction cells too (`fmprobe probe --train-fraction 1.0`, the default)."
            )
        table_fraction = 1.0 if any(math.isclose(f, 1.0) for f in fractions) else fractions[-1]
        shots = tuple(sorted(int(k) for k in prim["shots"].unique() if k > 0))
        check_fingerprints(name, prim)
        mixed = check_test_sets(name, prim, allow_different_test_sets)
        views.append(
            DatasetView(name, str(prim["task"].iloc[0]), metrics[0], prim, fractions, table_fraction, shots, mixed)
        )
    return views


# ------------------------------------------------------------------------------------------------ test sets

ALLOW_DIFFERENT_TEST_SETS = "--allow-different-test-sets (ReportOptions.allow_different_test_sets)"


def _configuration(row: pd.Series) -> str:
    return f"{row['model']} · {row['readout']} @{int(row['resolution'])} · {row['probe']}"


def check_fingerprints(name: str, rows: pd.DataFrame) -> None:
    """Refuse a table cell (model, readout, resolution, probe) whose rows have several fingerprints.

    A fingerprint names a feature cache (or a fine-tuning run), so such rows are different data, preprocessing,
    dtype or recipe under one name, e.g. rows of an older fmprobe that named ``?uncertain=zeros`` and
    ``?uncertain=ignore`` alike, or a fine-tuning setting rerun with another recipe: a cell would show one of them
    as if it were the only one."""
    keys = ["model", "readout", "resolution", "probe"]
    fingerprints = rows.groupby(keys, sort=True)["fingerprint"].unique()
    pooled = [(cell, sorted(map(str, fps))) for cell, fps in fingerprints.items() if len(fps) > 1]
    if not pooled:
        return
    (model, readout, resolution, probe), fps = pooled[0]
    more = f" ({len(pooled)} cells in all)" if len(pooled) > 1 else ""
    raise ResultsError(
        f"dataset {name!r}: the table cell {model} · {readout} @{resolution} · {probe} would pool rows of "
        f"{len(fps)} fingerprints ({', '.join(fps)}){more}: different feature caches or fine-tuning runs (data, "
        "preprocessing, dtype or recipe) under one name. Separate them: report each results table on its own, or "
        "keep the rows of one fingerprint "
        "(e.g. write_report(df[df.fingerprint == ...])); re-probed with this version, dataset variants get "
        "names of their own (e.g. chexpert[uncertain=ignore]-...)."
    )


def _test_set_keys(rows: pd.DataFrame) -> pd.Series:
    """Per row, the digest of the test ids it was scored on: its ``test_set``, or for a row of an older table (none
    recorded) the digest of a predictions file's ids, one file per fingerprint (one feature file, one test split);
    '' when unknown (no predictions file)."""
    keys = rows["test_set"].fillna("").astype(str)
    for _fp, group in rows[keys == ""].groupby("fingerprint", sort=True):
        for path in group["predictions"]:
            try:
                keys[group.index] = test_set_digest(_load(path).ids)
                break
            except ResultsError:
                continue
    return keys


def check_test_sets(name: str, rows: pd.DataFrame, allow: bool) -> str:
    """'' when every row of the dataset was scored on one test set; else refuse, naming the configurations and
    their test-set sizes, or (``allow``) the sentence the report shows: values are each on their own test set
    and paired gains use only the test ids both configurations share."""
    keys = _test_set_keys(rows)
    known = rows.assign(test_key=keys)[keys != ""]
    sets = sorted(known["test_key"].unique())
    if len(sets) <= 1:
        return ""
    parts = []
    for key in sets:
        group = known[known["test_key"] == key]
        configs = sorted({_configuration(r) for _, r in group.iterrows()})
        listed = ", ".join(configs[:3]) + (f" and {len(configs) - 3} more" if len(configs) > 3 else "")
        parts.append(f"{int(group['n_test'].max())} test samples (test set {key}): {listed}")
    what = f"{len(sets)} different test sets: " + "; ".join(parts)
    if not allow:
        raise ResultsError(
            f"dataset {name!r}: its rows were scored on {what}. Comparing them would compare different samples. "
            "Score every configuration on the same test set (the same dataset spec and --max-images), or pass "
            f"{ALLOW_DIFFERENT_TEST_SETS} to compare them on the test ids they share."
        )
    return (
        f"Rows of this dataset were scored on {what}. With --allow-different-test-sets, each table value is on its "
        "own test set and paired gains use only the test ids both configurations were scored on."
    )


# ------------------------------------------------------------------------------------------------ selection


@dataclass(frozen=True)
class Choice:
    """A configuration chosen on validation data, with its rows (one per repeat) at one train fraction."""

    model: str
    backbone: str
    weights: str
    readout: str
    resolution: int
    probe: str
    val_score: float  # mean over repeats
    rows: pd.DataFrame  # sorted by repeat

    @property
    def first(self) -> pd.Series:
        return self.rows.iloc[0]

    def describe(self) -> str:
        return f"{self.probe}, readout {self.readout}, {self.resolution}px"


def choose_on_val(rows: pd.DataFrame, metric: str, by: str | None = "model") -> dict[str, Choice]:
    """Best configuration per ``by`` group (or overall when None, keyed ''), by mean validation score.

    Configurations without any validation score are never chosen. Ties go to the first configuration in
    sorted order, so the choice is deterministic.
    """
    if rows.empty:
        return {}
    sign = 1.0 if higher_is_better(metric) else -1.0
    agg = rows.groupby(["model"] + CONFIG, sort=True, dropna=False)["val_score"].mean().reset_index()
    agg = agg[agg["val_score"].notna()]
    out: dict[str, Choice] = {}
    groups = agg.groupby("model", sort=True) if by == "model" else [("", agg)]
    for key, g in groups:
        best = g.iloc[int(np.argmax(sign * g["val_score"].to_numpy()))] if len(g) else None
        if best is None:
            continue
        mask = np.ones(len(rows), bool)
        for c in CONFIG:
            mask &= (rows[c] == best[c]).to_numpy()
        out[str(key)] = Choice(
            str(best["model"]),
            str(best["backbone"]),
            str(best["weights"]),
            str(best["readout"]),
            int(best["resolution"]),
            str(best["probe"]),
            float(best["val_score"]),
            rows[mask].sort_values("repeat"),
        )
    return out


def pick_baseline(models: list[str], baseline: str | None, registered: Iterable[str] = ()) -> tuple[str, str]:
    """(baseline model, sentence explaining the choice): the one given, else the model the backbone registry marks
    as an ImageNet baseline (``registered``: the rows' ``imagenet_baseline`` column), else the first alphabetically.

    Never a guess from the name: ``openclip:...``, ``hf:...`` and ``:random`` models are compared like any other."""
    if baseline is not None:
        if baseline in models:
            return baseline, f"Baseline: `{baseline}` (given)."
        raise ResultsError(
            f"baseline {baseline!r} is not a model in these results. "
            f"{suggest(baseline, models)}Models: {', '.join(models)}."
        )
    candidates = sorted(set(registered) & set(models))
    if candidates:
        others = f" (others registered as ImageNet baselines: {', '.join(candidates[1:])})" if candidates[1:] else ""
        return candidates[0], (
            f"Baseline: `{candidates[0]}` (chosen automatically: no baseline was given, and the backbone registry "
            f"marks it as an ImageNet baseline{others}; pass --baseline NAME to compare against another model)."
        )
    first = sorted(models)[0]
    return first, (
        f"Baseline: `{first}` (chosen automatically: no baseline was given and no model in these results is "
        "registered as an ImageNet baseline, so the first model alphabetically is used; pass --baseline NAME)."
    )


# ------------------------------------------------------------------------------------------------ gains


@dataclass
class Gain:
    """Paired comparison of one model against the baseline on one dataset (both val-selected)."""

    dataset: str
    model: str
    metric: str
    choice: Choice | None = None
    base_choice: Choice | None = None
    value: float = math.nan
    base_value: float = math.nan
    diff: float = math.nan
    rel: float = math.nan
    rel_low: float = math.nan
    rel_high: float = math.nan
    p_value: float = math.nan
    n_test: int = 0
    repeat: int = 0
    samples: np.ndarray | None = field(default=None, repr=False)  # bootstrap replicates of the relative gain
    reason: str = ""  # why there is no gain (empty when there is one)
    subset: str = ""  # what the pairing used when not both whole test sets (--allow-different-test-sets)


@dataclass(frozen=True)
class MeanGain:
    model: str
    rel: float
    low: float
    high: float
    datasets: tuple[str, ...]


def _load(path: str) -> Predictions:
    if not path:
        raise ResultsError("this cell has no predictions file")
    return cell_predictions(path)


def cell_predictions(path: str | Path) -> Predictions:
    """A cell's predictions file, read once however many report sections use it: cached by path, size and
    modification time, so a file rewritten since (a rerun with --force) is read again."""
    try:
        stat = Path(path).stat()
    except OSError:
        return load_predictions(path)  # its own message names the file and the fix
    return _read_predictions(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=512)
def _read_predictions(path: str, size: int, mtime_ns: int) -> Predictions:
    return load_predictions(path)


def feature_file_of(predictions: str | Path) -> str:
    """The feature file a probe cell read (recorded in its predictions); '' for fine-tuned cells and unreadable
    predictions."""
    try:
        return str(cell_predictions(str(predictions)).meta.get("feature_file", "")) if str(predictions) else ""
    except FmprobeError:
        return ""


def _common_ids(a: Predictions, b: Predictions) -> tuple[Predictions, Predictions, str]:
    """Both predictions restricted to the test ids they share, and a note saying so ('' when they are one set)."""
    common = np.intersect1d(a.ids, b.ids)
    if len(common) == len(a.ids) == len(b.ids):
        return a, b, ""
    if len(common) == 0:
        raise ResultsError("the two predictions files share no test id")

    def keep(p: Predictions) -> Predictions:
        mask = np.isin(p.ids, common)
        meta = p.meta if p.y_pred is None else {**p.meta, "y_pred": p.y_pred[mask].tolist()}
        return Predictions(p.ids[mask], p.y_true[mask], p.y_score[mask], meta)

    return keep(a), keep(b), f"on the {len(common)} test ids both were scored on (of {len(a.ids)} and {len(b.ids)})"


@dataclass(frozen=True)
class PairedArrays:
    """Two cells' predictions on one test set, aligned on sample id; ``pred_*``: decoded classes, or None when the
    label metrics use the scores' argmax."""

    y_true: np.ndarray
    score_a: np.ndarray
    score_b: np.ndarray
    pred_a: np.ndarray | None
    pred_b: np.ndarray | None


def _paired_arrays(a: Predictions, b: Predictions) -> PairedArrays:
    """Both cells' predictions aligned on sample id; refuses anything that is not the same test set."""
    if len(a.ids) != len(b.ids) or set(a.ids.tolist()) != set(b.ids.tolist()):
        raise ResultsError("the two predictions files do not cover the same test ids")
    order_a, order_b = np.argsort(a.ids, kind="stable"), np.argsort(b.ids, kind="stable")
    ya, yb = a.y_true[order_a], b.y_true[order_b]
    if ya.shape != yb.shape or not np.array_equal(ya, yb):
        raise ResultsError("the two predictions files disagree on the test labels")
    decoded_a, decoded_b = a.y_pred, b.y_pred
    return PairedArrays(
        ya, a.y_score[order_a], b.y_score[order_b],
        None if decoded_a is None else decoded_a[order_a], None if decoded_b is None else decoded_b[order_b],
    )  # fmt: skip


def relative_gain_samples(
    metric: str, y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, n_bootstrap: int, seed: int,
    pred_a: np.ndarray | None = None, pred_b: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Bootstrap replicates of (metric(a) - metric(b)) / metric(b), NaN where undefined.

    Uses the same resample generator, strata and seed as ``metrics.paired_bootstrap``, so these are exactly
    the replicates behind its relative-gain interval (a test checks this). ``pred_*`` as in ``paired_bootstrap``.
    """
    m = get_metric(metric)
    pa, pb = Prepared(y_true, score_a, pred_a), Prepared(y_true, score_b, pred_b)
    va, vb = replicate([lambda W: m.batch(pa, W), lambda W: m.batch(pb, W)], pa.n, pa.strata(), n_bootstrap, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(vb != 0, (va - vb) / np.where(vb != 0, vb, 1.0), np.nan)


def paired_gain(view: DatasetView, choice: Choice, base: Choice, n_bootstrap: int, seed: int) -> Gain:
    """Relative gain of ``choice`` over ``base`` on the same test samples, with a paired bootstrap CI.

    With several repeats the lowest repeat index both configurations have is compared (repeats of the same
    configuration share the test set; comparing like with like keeps the pairing exact). On a view whose rows were
    scored on different test sets (allowed) the pair is compared on the test ids both share, and ``subset`` says so.
    """
    g = Gain(view.name, choice.model, view.metric, choice, base)
    common = sorted(set(choice.rows["repeat"]) & set(base.rows["repeat"]))
    if not common:
        g.reason = "no repeat index in common with the baseline"
        return g
    g.repeat = common[0]
    row_a = choice.rows[choice.rows["repeat"] == g.repeat].iloc[0]
    row_b = base.rows[base.rows["repeat"] == g.repeat].iloc[0]
    try:
        pred_a, pred_b = _load(row_a["predictions"]), _load(row_b["predictions"])
        if view.mixed_test_sets:
            pred_a, pred_b, g.subset = _common_ids(pred_a, pred_b)
        pair = _paired_arrays(pred_a, pred_b)
        decoded = {"pred_a": pair.pred_a, "pred_b": pair.pred_b}  # ordinal cells: the grades their rows were scored on
        cmp = paired_bootstrap(view.metric, pair.y_true, pair.score_a, pair.score_b, n_resamples=n_bootstrap, seed=seed, **decoded)
    except (ResultsError, MetricUndefined) as e:
        g.reason = str(e)
        return g
    g.n_test, g.value, g.base_value, g.diff = len(pair.y_true), cmp.value_a, cmp.value_b, cmp.diff
    g.p_value = cmp.p_value
    if cmp.rel_gain is None or cmp.value_b <= 0:
        g.reason = (
            f"baseline {view.metric} is {cmp.value_b:.3f}; a relative gain over a value <= 0 is not meaningful"
            if cmp.value_b <= 0
            else "relative gain undefined on too many resamples"
        )
        return g
    g.rel, g.rel_low, g.rel_high = cmp.rel_gain, cmp.rel_low, cmp.rel_high
    g.samples = relative_gain_samples(view.metric, pair.y_true, pair.score_a, pair.score_b, n_bootstrap, seed, **decoded)
    return g


def mean_gain(model: str, gains: list[Gain], level: float = 0.95) -> MeanGain | None:
    """Average relative gain over datasets with a percentile CI from combined bootstrap replicates.

    Datasets are independent test sets resampled independently, so averaging the b-th replicate of every
    dataset gives the b-th replicate of the average; the CI is the percentile interval of those averages.
    Replicates undefined on any dataset are dropped.
    """
    usable = [g for g in gains if g.model == model and g.samples is not None]
    if not usable:
        return None
    stack = np.vstack([g.samples for g in usable])
    avg = stack.mean(axis=0)
    avg = avg[np.isfinite(avg)]
    if len(avg) == 0:
        return None
    alpha = (1 - level) / 2
    low, high = np.quantile(avg, [alpha, 1 - alpha])
    return MeanGain(
        model, float(np.mean([g.rel for g in usable])), float(low), float(high), tuple(g.dataset for g in usable)
    )


@dataclass
class Headline:
    baseline: str
    baseline_note: str
    gains: list[Gain]
    means: list[MeanGain]
    models: list[str]  # non-baseline models, in display order


def headline(views: list[DatasetView], baseline: str | None, n_bootstrap: int, seed: int) -> Headline:
    models = sorted({m for v in views for m in v.rows["model"].unique()})
    registered = {m for v in views for m in v.rows.loc[v.rows["imagenet_baseline"], "model"]}
    base, note = pick_baseline(models, baseline, registered)
    others = [m for m in models if m != base]
    gains: list[Gain] = []
    for v in views:
        choices = choose_on_val(v.at(v.table_fraction), v.metric)
        for m in others:
            if m not in v.rows["model"].values:
                continue
            if base not in choices or m not in choices:
                missing = base if base not in choices else m
                ran = missing in v.rows["model"].values
                gains.append(
                    Gain(
                        v.name,
                        m,
                        v.metric,
                        reason=f"`{missing}` "
                        + (
                            "has no configuration with a validation score here"
                            if ran
                            else "was not run on this dataset"
                        ),
                    )
                )
                continue
            gains.append(paired_gain(v, choices[m], choices[base], n_bootstrap, seed))
    means = [mg for m in others if (mg := mean_gain(m, gains)) is not None]
    return Headline(base, note, gains, means, others)


# ------------------------------------------------------------------------------------------------ curves


class Axis(StrEnum):
    """The x axis of a data-efficiency curve: the fraction of the training set, or labelled images per class."""

    fraction = "fraction"
    shots = "shots"


@dataclass(frozen=True)
class CurvePoint:
    """One point of a data-efficiency curve: the val-selected configuration's test value over its repeats.

    ``ci_low``/``ci_high`` is the band :func:`repeat_band` computes: it spans the spread over repeats (subsample
    and seed), not only one test set's bootstrap."""

    x: float  # the train fraction, or the shots per class (Axis.shots)
    mean: float  # over repeats
    sd: float  # over repeats (0 with one repeat)
    ci_low: float
    ci_high: float
    n_train: int
    probe: str
    repeats: int = 1


def repeat_band(
    values: np.ndarray, ci_low: np.ndarray, ci_high: np.ndarray, level: float = CI_LEVEL
) -> tuple[float, float]:
    """A ``level`` band for one repeat's test value: mean ± z·sqrt(between-repeat variance + mean within-repeat
    bootstrap variance).

    The repeats share one test set, so their spread is the variance from the training subsample and the seed;
    each repeat's bootstrap CI gives the test-set variance (its sd read from the CI width, width / (2 z), the
    normal approximation of a percentile interval). Their sum is the variance of a rerun of the protocol, new draw
    and new test sample alike; averaging the repeats' CI bounds (the old band) dropped the first term. Repeats
    whose value is missing are left out; a repeat without a CI adds no test-set term."""
    ok = np.isfinite(values)
    values, widths = values[ok], (ci_high - ci_low)[ok]
    z = NormalDist().inv_cdf(0.5 + level / 2)
    between = float(np.var(values, ddof=1)) if len(values) > 1 else 0.0
    finite = widths[np.isfinite(widths)]
    within = float(np.mean((finite / (2 * z)) ** 2)) if len(finite) else 0.0
    half = z * math.sqrt(between + within)
    mean = float(np.mean(values))
    return mean - half, mean + half


def efficiency_curves(view: DatasetView, axis: Axis | str = Axis.fraction) -> dict[str, list[CurvePoint]]:
    """Per model, the val-selected configuration at each train fraction (or, ``axis="shots"``, at each number of
    shots per class): mean test value, sd over repeats, and the :func:`repeat_band` band."""
    axis = Axis(axis)
    xs = view.fractions if axis is Axis.fraction else view.shots
    curves: dict[str, list[CurvePoint]] = {}
    for x in xs:
        rows = view.at(x) if axis is Axis.fraction else view.at_shots(int(x))
        for model, c in choose_on_val(rows, view.metric).items():
            vals = c.rows["value"].dropna()
            if vals.empty:
                continue
            sd = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            low, high = repeat_band(*(c.rows[k].to_numpy(dtype=float) for k in ("value", "ci_low", "ci_high")))
            curves.setdefault(model, []).append(
                CurvePoint(x, float(vals.mean()), sd, low, high, int(c.rows["n_train"].iloc[0]), c.probe, len(vals))
            )
    return curves


THRESHOLD_NOT_RECORDED = (
    "the validation threshold was not recorded: predictions written before fmprobe stored Youden's J on "
    "validation, or by fine-tuning"
)


@dataclass(frozen=True)
class Confusion:
    """Test confusion counts (rows = truth) of a configuration's first repeat and the decision rule behind them.

    Binary cells use the positive-class cut chosen on validation by Youden's J (``threshold``) when their
    predictions file records it (``meta["threshold"]["youden_val"]``); everything else uses the argmax (an ordinal
    cell: its decoded grades), and ``note`` says why for a binary cell."""

    counts: np.ndarray
    classes: list[str]
    threshold: float | None = None
    note: str = ""

    def recalls(self) -> list[float]:
        """Recall of each class at this rule (binary: sensitivity and specificity, whichever class is the finding);
        NaN for a class without test samples."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return [float(x) for x in np.diag(self.counts) / self.counts.sum(axis=1)]


def confusion_counts(y_true: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return cm


def confusion(choice: Choice, use_threshold: bool = True) -> Confusion:
    """The configuration's first-repeat test confusion matrix; binary at the validation Youden threshold when it
    was recorded and ``use_threshold``, else at the argmax."""
    pred = _load(choice.first["predictions"])
    k = pred.y_score.shape[1]
    decoded = pred.y_pred  # an ordinal cell's decoded grades, when they are not the argmax
    argmax = np.asarray(decoded, dtype=np.int64) if decoded is not None else pred.y_score.argmax(axis=1)
    if k != 2 or not use_threshold:
        return Confusion(confusion_counts(pred.y_true, argmax, k), pred.class_names)
    recorded = pred.meta.get("threshold") or {}
    t = recorded.get("youden_val")
    if t is None:
        why = f"no validation threshold: {recorded['reason']}" if recorded.get("reason") else THRESHOLD_NOT_RECORDED
        return Confusion(confusion_counts(pred.y_true, argmax, k), pred.class_names, note=why)
    predicted = (pred.y_score[:, 1] >= float(t)).astype(np.int64)
    return Confusion(confusion_counts(pred.y_true, predicted, k), pred.class_names, float(t))

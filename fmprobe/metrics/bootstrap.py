"""Bootstrap confidence intervals and paired comparisons, vectorised over resamples.

A resample is represented by how many times each sample was drawn (a row of a ``[B, N]`` count matrix
built from a resample index matrix); metrics from :mod:`fmprobe.metrics.functions` evaluate a whole block
of such rows at once. Blocks are sized from N, so the same seed always gives the same resamples and the same
numbers.

Stratification. Single-label tasks resample within each class (each resample keeps the class counts of the
original, so AUC etc. stay defined). Multilabel tasks resample whole rows (so the labels' correlation, which the
width of a mean over labels depends on, stays in the resamples), stratified on the *rare* labels
(:meth:`~fmprobe.metrics.functions.Prepared.strata`: evaluable labels with fewer than ``RARE_SIDE`` = 10 known
positives or negatives): rows are resampled within groups of equal values on those labels, so every rare label
keeps its known positive and negative counts, and a label with a single positive is never lost. The mean AUC is
over a fixed label set (the labels evaluable on the full test set); a resample on which a label of that set has
one side only (possible only for a label with 10 or more of each, probability below 1 in 22,000) is undefined,
dropped and counted like any other, never averaged over fewer labels. Plain resampling would lose a 1-positive
label on ~37% of resamples, far above ``MAX_UNDEFINED``, so the interval would be refused. With no rare label the
resampling is plain, as before. Paired comparisons draw one set of resamples for both models, so they stay paired.

Intervals are percentile intervals. Resamples on which a metric is undefined are dropped and counted; when
more than ``max_undefined`` of them are, :class:`MetricUndefined` is raised rather than reporting an
interval computed from a biased subset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from fmprobe.metrics.functions import Metric, MetricInputError, MetricUndefined, Prepared, get_metric

MetricLike = str | Metric | Callable[[np.ndarray, np.ndarray], float]
Batched = Callable[[np.ndarray], np.ndarray]  # W [B, N] -> values [B] (NaN = undefined)

N_BOOTSTRAP = 1000  # resamples per confidence interval: the library's default everywhere (probe, finetune, report)
CI_LEVEL = 0.95  # central level of every bootstrap interval
MAX_UNDEFINED = 0.1  # above this fraction of undefined resamples an interval would be biased: refuse it
_CELLS_PER_BLOCK = 4_000_000  # resamples x samples per block: bounds memory at a few hundred MB


@dataclass(frozen=True)
class ConfidenceInterval:
    """Percentile bootstrap interval; unpacks as ``low, high``."""

    low: float
    high: float
    estimate: float
    level: float
    n_resamples: int
    n_undefined: int

    def __iter__(self) -> Iterator[float]:
        return iter((self.low, self.high))

    def __getitem__(self, i: int) -> float:
        return (self.low, self.high)[i]

    def __len__(self) -> int:
        return 2


@dataclass(frozen=True)
class PairedComparison:
    """``metric(a) - metric(b)`` on the same samples, with a paired-bootstrap CI and two-sided p-value.

    ``rel_gain = diff / metric(b)`` with its own interval (None when metric(b) is 0 or the ratio is
    undefined on too many resamples).
    """

    diff: float
    low: float
    high: float
    p_value: float
    rel_gain: float | None
    rel_low: float | None
    rel_high: float | None
    value_a: float
    value_b: float
    level: float
    n_resamples: int
    n_undefined: int


def resample_weights(strata: np.ndarray | None, n: int, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Yield blocks of bootstrap count matrices ``[b, n]`` (float64), ``n_resamples`` rows in total.

    With ``strata``, each resample draws ``n_c`` samples with replacement within every stratum ``c``.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if strata is None else [np.flatnonzero(strata == c) for c in np.unique(strata)]
    block = max(1, min(n_resamples, _CELLS_PER_BLOCK // max(n, 1)))
    done = 0
    while done < n_resamples:
        b = min(block, n_resamples - done)
        idx = np.concatenate([g[rng.integers(0, len(g), size=(b, len(g)))] for g in groups], axis=1)
        flat = (idx + (np.arange(b) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
        done += b


def replicate_each(
    fns: Sequence[Batched], n: int, strata: np.ndarray | None, n_resamples: int, seed: int
) -> list[np.ndarray]:
    """Evaluate every batched function on the same resamples; a function may return ``[b]`` or ``[b, k]``
    values per block, and its replicates are then ``[n_resamples]`` or ``[n_resamples, k]``."""
    out: list[list[np.ndarray]] = [[] for _ in fns]
    for W in resample_weights(strata, n, n_resamples, seed):
        for values, fn in zip(out, fns, strict=True):
            values.append(fn(W))
    return [np.concatenate(v) for v in out]


def replicate(fns: Sequence[Batched], n: int, strata: np.ndarray | None, n_resamples: int, seed: int) -> np.ndarray:
    """Evaluate every batched function on the same resamples: ``[len(fns), n_resamples]``."""
    return np.array(replicate_each(fns, n, strata, n_resamples, seed))


def _loop_batched(fn: Callable[[np.ndarray, np.ndarray], float], y_true: np.ndarray, y_score: np.ndarray) -> Batched:
    """Fallback for a plain metric function: materialise each resample (slow, but any metric works)."""

    def batched(W: np.ndarray) -> np.ndarray:
        out = np.empty(W.shape[0])
        for i, counts in enumerate(W.astype(np.int64)):
            idx = np.repeat(np.arange(len(counts)), counts)
            try:
                out[i] = fn(y_true[idx], y_score[idx])
            except MetricUndefined:
                out[i] = np.nan
        return out

    return batched


def _setup(
    metric: MetricLike, y_true: object, y_score: object, stratify: bool, y_pred: object | None = None
) -> tuple[float, Batched, np.ndarray | None]:
    """(point estimate, batched evaluator, strata) for a metric name/object or a plain function; ``y_pred``: the
    predicted classes when they are not the scores' argmax (see :class:`Prepared`)."""
    if callable(metric) and not isinstance(metric, Metric):
        if y_pred is not None:
            raise MetricInputError("y_pred needs a registered metric (name or Metric), not a plain function")
        yt, ys = np.asarray(y_true), np.asarray(y_score)
        strata = yt if (stratify and yt.ndim == 1) else None
        return float(metric(yt, ys)), _loop_batched(metric, yt, ys), strata
    m = get_metric(metric)
    p = Prepared(y_true, y_score, y_pred)
    return m.evaluate(p), lambda W: m.batch(p, W), (p.strata() if stratify else None)


def drop_undefined(values: np.ndarray, what: str, max_undefined: float) -> np.ndarray:
    """The finite replicates; raise MetricUndefined when more than ``max_undefined`` of them are NaN."""
    ok = np.isfinite(values)
    bad = int((~ok).sum())
    if bad > max_undefined * len(values):
        raise MetricUndefined(
            f"{what} is undefined on {bad} of {len(values)} bootstrap resamples "
            f"(more than {max_undefined:.0%}); the interval would be biased"
        )
    return values[ok]


def percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap replicates."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _name(metric: MetricLike) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "name", getattr(metric, "__name__", "metric"))


def bootstrap_ci(
    metric: MetricLike,
    y_true: object,
    y_score: object,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = CI_LEVEL,
    *,
    stratify: bool = True,
    max_undefined: float = MAX_UNDEFINED,
) -> ConfidenceInterval:
    """Percentile bootstrap CI of ``metric`` (a name, a :class:`Metric`, or any ``fn(y_true, y_score)``)."""
    estimate, fn, strata = _setup(metric, y_true, y_score, stratify)
    values = replicate([fn], len(np.asarray(y_true)), strata, n_resamples, seed)[0]
    valid = drop_undefined(values, _name(metric), max_undefined)
    low, high = percentile_interval(valid, level)
    return ConfidenceInterval(low, high, estimate, level, n_resamples, n_resamples - len(valid))


def bootstrap_p_value(diffs: np.ndarray) -> float:
    """Two-sided p-value of H0 "no difference" from bootstrap replicates of a difference.

    ``p = min(1, 2 * min(1 + #{d <= 0}, 1 + #{d >= 0}) / (B + 1))``: twice the smaller bootstrap tail at 0,
    with the +1 correction so that p is never exactly 0 with finitely many resamples. It is the percentile
    interval inverted: p < 1 - level roughly when the level-CI excludes 0.
    """
    b = len(diffs)
    tail = min(1 + int((diffs <= 0).sum()), 1 + int((diffs >= 0).sum()))
    return min(1.0, 2.0 * tail / (b + 1))


def paired_bootstrap(
    metric: MetricLike,
    y_true: object,
    score_a: object,
    score_b: object,
    n_resamples: int = N_BOOTSTRAP,
    seed: int = 0,
    level: float = CI_LEVEL,
    *,
    stratify: bool = True,
    max_undefined: float = MAX_UNDEFINED,
    pred_a: object | None = None,
    pred_b: object | None = None,
) -> PairedComparison:
    """Compare two models' scores on the same samples with the same resamples (paired bootstrap); ``pred_a`` /
    ``pred_b``: each model's predicted classes when they are not its scores' argmax (ordinal decodings)."""
    a, fn_a, strata = _setup(metric, y_true, score_a, stratify, pred_a)
    b, fn_b, _ = _setup(metric, y_true, score_b, stratify, pred_b)
    va, vb = replicate([fn_a, fn_b], len(np.asarray(y_true)), strata, n_resamples, seed)
    d = va - vb
    name = _name(metric)
    diffs = drop_undefined(d, f"the difference in {name}", max_undefined)
    low, high = percentile_interval(diffs, level)
    rel = rel_low = rel_high = None
    if b != 0:
        rel = (a - b) / b
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(vb != 0, d / np.where(vb != 0, vb, 1.0), np.nan)
        try:
            valid_ratios = drop_undefined(ratios, f"the relative gain in {name}", max_undefined)
            rel_low, rel_high = percentile_interval(valid_ratios, level)
        except MetricUndefined:
            rel = rel_low = rel_high = None
    return PairedComparison(
        diff=a - b,
        low=low,
        high=high,
        p_value=bootstrap_p_value(diffs),
        rel_gain=rel,
        rel_low=rel_low,
        rel_high=rel_high,
        value_a=a,
        value_b=b,
        level=level,
        n_resamples=n_resamples,
        n_undefined=n_resamples - len(diffs),
    )

"""Subgroup metrics: a cell's test metrics on each value of a sample attribute, the worst group, and the gap.

Plain functions of arrays. An *attribute* is one per-sample column of strings (``sex``, ``site``; ``""`` means
unknown: those samples are in no group and counted). A *derived* attribute ``<key>_band`` cuts a numeric column
``<key>`` at edges (:func:`band_values`; only ``age`` has default edges, :data:`DEFAULT_BANDS`).

* :func:`group_metrics` evaluates every group with the caller's ``evaluate(rows)`` (the very function that scored
  the whole test set, so a group's numbers are the cell's numbers on fewer rows: its bootstrap CIs, per-study
  aggregation, decoded grades). A group with fewer than ``min_size`` rows gets no number, only the reason.
* :func:`gap` compares the best and the worst eligible group on the primary metric with a paired bootstrap: each
  resample draws within every (group, stratum) cell, so both groups are evaluated on the same resample and keep
  their sizes (and their class counts, as every CI here does). ``value`` is how much worse the worst group is
  (>= 0 in the metric's units whichever way the metric points); ``p_value`` the two-sided bootstrap p of 0.
  The pair is chosen on the observed values, so with many small groups the gap is biased upward and its p
  optimistic; :func:`summarise` Holm-adjusts the p-values across a cell's attributes, not across its pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from fmprobe.metrics.bootstrap import (
    CI_LEVEL,
    MAX_UNDEFINED,
    bootstrap_p_value,
    drop_undefined,
    percentile_interval,
    resample_weights,
)
from fmprobe.metrics.evaluate import MetricValue
from fmprobe.metrics.functions import MetricInputError, MetricUndefined, Prepared, get_metric

MIN_GROUP_SIZE = 30  # below this a group's metric is reported as too small, never as a number
DEFAULT_BANDS: Mapping[str, tuple[float, ...]] = {"age": (40.0, 60.0, 80.0)}  # derived <key>_band edges, per key
BAND_SUFFIX = "_band"
UNKNOWN = ""  # an attribute value that is not known: the sample is in no group
MIN_SIZE_OPTION = "--subgroup-min-size"  # the option a too-small group's reason names

Evaluate = Callable[[np.ndarray], Mapping[str, MetricValue]]  # row indices -> every metric of the cell on them


@dataclass(frozen=True)
class TestedValue(MetricValue):
    """A metric value that is also a test (a gap between groups): its two-sided p-value."""

    p_value: float | None = None


@dataclass(frozen=True)
class GroupResult:
    """One group's metrics (values or reasons) and its size."""

    attribute: str
    value: str
    n: int
    metrics: Mapping[str, MetricValue]

    @property
    def label(self) -> str:
        return f"{self.attribute}={self.value}"


@dataclass(frozen=True)
class AttributeResult:
    """An attribute's groups and its two summary rows (``worst[<m>]`` and ``gap[<m>]``, each with its n)."""

    attribute: str
    groups: tuple[GroupResult, ...]
    n_unknown: int
    summary: Mapping[str, tuple[int, MetricValue]]


# ---------------------------------------------------------------------------------------------- attributes


def _edge(x: float) -> str:
    return f"{x:g}"


def band_names(edges: Sequence[float]) -> list[str]:
    """``(40, 60, 80)`` -> ``["<40", "40–60", "60–80", "≥80"]``: each band is [low, high)."""
    e = [_edge(x) for x in edges]
    return [f"<{e[0]}"] + [f"{a}–{b}" for a, b in zip(e, e[1:])] + [f"≥{e[-1]}"]


def check_edges(key: str, edges: Sequence[float]) -> tuple[float, ...]:
    """The edges as floats, refused unless they are at least one finite number, strictly increasing."""
    try:
        out = tuple(float(x) for x in edges)
    except (TypeError, ValueError):
        out = ()
    if not out or not all(math.isfinite(x) for x in out) or any(b <= a for a, b in zip(out, out[1:])):
        raise MetricInputError(
            f"--bands {key}={','.join(map(str, edges))}: give increasing numbers, e.g. --bands {key}=40,60,80"
        )
    return out


def band_values(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Each numeric value's band name (:func:`band_names`); empty or non-numeric values are unknown (``""``)."""
    names = np.asarray(band_names(edges) + [UNKNOWN], dtype=object)
    numbers = np.full(len(values), np.nan)
    for i, v in enumerate(np.asarray(values, dtype=str)):
        try:
            numbers[i] = float(v)
        except ValueError:
            pass
    known = np.isfinite(numbers)
    codes = np.where(known, np.searchsorted(np.asarray(edges, dtype=float), np.where(known, numbers, 0), "right"), -1)
    return names[codes].astype(str)


def available(keys: Sequence[str], bands: Mapping[str, Sequence[float]]) -> list[str]:
    """The attributes a metadata table with ``keys`` offers: its keys and ``<key>_band`` for each key with edges."""
    return [*keys, *(f"{k}{BAND_SUFFIX}" for k in bands if k in keys)]


def attribute_values(
    metadata: Mapping[str, np.ndarray], name: str, bands: Mapping[str, Sequence[float]]
) -> np.ndarray:
    """The per-sample values of attribute ``name``: a metadata column, or a band of a numeric column."""
    if name in metadata:
        return np.asarray(metadata[name], dtype=str)
    base = name[: -len(BAND_SUFFIX)] if name.endswith(BAND_SUFFIX) else None
    if base is not None and base in metadata:
        if base not in bands:
            raise MetricInputError(f"subgroup {name!r} needs band edges for {base!r}: pass --bands {base}=EDGES")
        return band_values(metadata[base], check_edges(base, bands[base]))
    stored = ", ".join(sorted(metadata)) or "none"
    raise MetricInputError(
        f"subgroup attribute {name!r} is not in the metadata (stored keys: {stored}; derived: "
        f"{', '.join(f'{k}{BAND_SUFFIX}' for k in bands if k in metadata) or 'none'})"
    )


def unit_values(units: np.ndarray, values: np.ndarray, unit_ids: np.ndarray) -> np.ndarray:
    """Per aggregated unit (a study of several views): the value its rows share, unknown where they disagree."""
    out = np.full(len(unit_ids), UNKNOWN, dtype=object)
    position = {str(u): i for i, u in enumerate(unit_ids)}
    seen: dict[int, str] = {}
    for unit, value in zip(np.asarray(units, dtype=str), np.asarray(values, dtype=str)):
        i = position.get(unit)
        if i is not None:
            seen[i] = value if seen.get(i, value) == value else UNKNOWN
    for i, value in seen.items():
        out[i] = value
    return out.astype(str)


# ---------------------------------------------------------------------------------------------- metrics


def too_small_reason(n: int, min_size: int) -> str:
    return f"group too small: n={n} < {min_size} ({MIN_SIZE_OPTION})"


def group_metrics(
    groups: np.ndarray, evaluate: Evaluate, names: Sequence[str], attribute: str, min_size: int = MIN_GROUP_SIZE
) -> list[GroupResult]:
    """Every known value's metrics (``evaluate`` on its rows), sorted by value; groups under ``min_size`` rows get
    each of ``names`` missing with the reason instead."""
    out = []
    for value in sorted(set(np.asarray(groups, dtype=str).tolist()) - {UNKNOWN}):
        rows = np.flatnonzero(groups == value)
        if len(rows) < min_size:
            reason = too_small_reason(len(rows), min_size)
            out.append(GroupResult(attribute, value, len(rows), {m: MetricValue(None, reason) for m in names}))
        else:
            out.append(GroupResult(attribute, value, len(rows), dict(evaluate(rows))))
    return out


def _group_strata(p: Prepared) -> np.ndarray:
    strata = p.strata()
    return np.zeros(p.n, dtype=np.int64) if strata is None else np.unique(strata, return_inverse=True)[1].ravel()


def gap(
    metric: str, y_true: np.ndarray, y_score: np.ndarray, rows_a: np.ndarray, rows_b: np.ndarray, *,
    y_pred: np.ndarray | None = None, n_resamples: int = 0, seed: int = 0, level: float = CI_LEVEL,
    max_undefined: float = MAX_UNDEFINED,
) -> TestedValue:  # fmt: skip
    """``metric`` on rows ``a`` minus on rows ``b`` (signed so that a better ``a`` is positive), with a paired
    bootstrap CI and p-value (``n_resamples > 0``): one resample draws within every (group, stratum), both groups
    evaluated on it."""
    m = get_metric(metric)
    sign = 1.0 if m.higher_is_better else -1.0
    yt, ys = np.asarray(y_true), np.asarray(y_score)
    preps = [Prepared(yt[r], ys[r], None if y_pred is None else np.asarray(y_pred)[r]) for r in (rows_a, rows_b)]
    try:
        value = sign * (m.evaluate(preps[0]) - m.evaluate(preps[1]))
    except MetricUndefined as e:
        return TestedValue(None, e.reason)
    if n_resamples <= 0:
        return TestedValue(value)
    n_a = preps[0].n
    strata = np.r_[_group_strata(preps[0]), _group_strata(preps[1]) + n_a]  # b's strata never equal a's
    diffs = []
    for W in resample_weights(strata, n_a + preps[1].n, n_resamples, seed):
        diffs.append(sign * (m.batch(preps[0], W[:, :n_a]) - m.batch(preps[1], W[:, n_a:])))
    d = np.concatenate(diffs)
    try:
        valid = drop_undefined(d, f"the gap in {metric}", max_undefined)
    except MetricUndefined as e:
        return TestedValue(value, ci_reason=e.reason, n_undefined=int((~np.isfinite(d)).sum()))
    low, high = percentile_interval(valid, level)
    n_undefined, p = len(d) - len(valid), bootstrap_p_value(valid)
    return TestedValue(value, ci_low=low, ci_high=high, n_undefined=n_undefined, p_value=p)


def _unknown_note(n_unknown: int) -> str:
    return f"; {n_unknown} unknown excluded" if n_unknown else ""


def missing_summary(primary: str, reason: str) -> dict[str, tuple[int, MetricValue]]:
    """The two summary rows of an attribute that has none: missing, with the reason."""
    return {f"worst[{primary}]": (0, MetricValue(None, reason)), f"gap[{primary}]": (0, TestedValue(None, reason))}


def _summary(
    attribute: str, groups: Sequence[GroupResult], n_unknown: int, primary: str, y_true: np.ndarray,
    y_score: np.ndarray, y_pred: np.ndarray | None, values: np.ndarray, n_resamples: int, seed: int,
) -> dict[str, tuple[int, MetricValue]]:  # fmt: skip
    """``worst[<primary>]`` (the worst eligible group's value and CI) and ``gap[<primary>]`` (worst vs best, p not yet
    adjusted) of one attribute; missing with the reason when fewer than two groups have a value."""
    eligible = [g for g in groups if primary in g.metrics and g.metrics[primary].ok]
    if len(eligible) < 2:
        return missing_summary(
            primary, f"fewer than 2 groups with a {primary} value: {len(eligible)} of {len(groups)} groups of "
            f"{attribute}{_unknown_note(n_unknown)}",
        )  # fmt: skip
    sign = 1.0 if get_metric(primary).higher_is_better else -1.0
    ranked = sorted(eligible, key=lambda g: sign * float(g.metrics[primary].value))  # type: ignore[arg-type]
    worst, best = ranked[0], ranked[-1]
    rows_worst, rows_best = np.flatnonzero(values == worst.value), np.flatnonzero(values == best.value)
    diff = gap(primary, y_true, y_score, rows_best, rows_worst, y_pred=y_pred, n_resamples=n_resamples, seed=seed)
    note = _unknown_note(n_unknown)
    return {
        f"worst[{primary}]": (worst.n, replace(worst.metrics[primary], detail=f"{worst.label}{note}")),
        f"gap[{primary}]": (worst.n + best.n, replace(diff, detail=f"{worst.label} vs {best.label}{note}")),
    }


def _holm_adjusted(results: list[AttributeResult], primary: str) -> list[AttributeResult]:
    """Each attribute's gap p-value Holm-adjusted across the attributes that have one, said in its detail."""
    from fmprobe.metrics.stats import holm  # pandas and scipy.stats: only once gaps are tested, not at import

    name = f"gap[{primary}]"
    raw = [getattr(r.summary[name][1], "p_value", None) for r in results]
    p = np.array([math.nan if v is None else v for v in raw], dtype=np.float64)
    adjusted, m = holm(p), int(np.isfinite(p).sum())
    out = []
    for r, q in zip(results, adjusted, strict=True):
        n, value = r.summary[name]
        if np.isfinite(q):
            head, _, tail = value.detail.partition(";")
            plural = "attribute" if m == 1 else "attributes"
            detail = f"{head}; Holm over {m} {plural}" + (f";{tail}" if tail else "")
            value = replace(value, p_value=float(q), detail=detail)
        out.append(replace(r, summary={**r.summary, name: (n, value)}))
    return out


def subgroup_results(
    attributes: Mapping[str, np.ndarray], evaluate: Evaluate, names: Sequence[str], primary: str,
    y_true: np.ndarray, y_score: np.ndarray, *, y_pred: np.ndarray | None = None, min_size: int = MIN_GROUP_SIZE,
    n_resamples: int = 0, seed: int = 0,
) -> list[AttributeResult]:  # fmt: skip
    """Per attribute (name -> one value per row, ``""`` unknown): every group's metrics (:func:`group_metrics`), the
    worst group and the worst-vs-best gap on ``primary`` with its paired-bootstrap CI and a p-value Holm-adjusted
    across the attributes. ``y_true``/``y_score``/``y_pred`` are the rows ``evaluate`` indexes (for the gap)."""
    if min_size < 1:
        raise MetricInputError(f"{MIN_SIZE_OPTION} {min_size}: must be at least 1")
    results = []
    for attribute, values in attributes.items():
        values = np.asarray(values, dtype=str)
        if len(values) != len(y_true):
            raise MetricInputError(f"subgroup {attribute!r}: {len(values)} values for {len(y_true)} rows")
        groups = group_metrics(values, evaluate, names, attribute, min_size)
        n_unknown = int((values == UNKNOWN).sum())
        summary = _summary(attribute, groups, n_unknown, primary, y_true, y_score, y_pred, values, n_resamples, seed)
        results.append(AttributeResult(attribute, tuple(groups), n_unknown, summary))
    return _holm_adjusted(results, primary)


def parse_bands(specs: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``["age=40,60,80", "bmi=18.5,25,30"]`` (the ``--bands`` option, once per key) -> key -> edges."""
    out = {}
    for spec in specs:
        key, sep, edges = spec.partition("=")
        if not sep or not key.strip():
            raise MetricInputError(f"--bands {spec!r}: write KEY=EDGES, e.g. --bands age=40,60,80")
        out[key.strip()] = check_edges(key.strip(), [e for e in edges.split(",") if e.strip()])
    return out

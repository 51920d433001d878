"""Statistics over many comparisons, as plain functions of arrays and tables.

* :func:`holm` adjusts p-values for the number of comparisons made (Holm's step-down procedure: controls the
  family-wise error rate without assuming independence, and is never less powerful than Bonferroni).
* :func:`mean_ranks`, :func:`friedman`, :func:`pairwise_wilcoxon` and :func:`cliques` compare methods across
  datasets the way a critical-difference diagram does (Demšar 2006; Benavoli et al. 2016 for the Wilcoxon-Holm
  variant): a ``scores`` table has one row per dataset and one column per method.

With few datasets these tests have little power: the exact two-sided Wilcoxon p-value of 5 datasets is never
below 0.0625, so "not significant" there is no evidence that the methods are equal.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as _scipy

from fmprobe.errors import FmprobeError

MIN_METHODS = 3  # the Friedman test compares at least three methods (two: use the Wilcoxon test)
MIN_DATASETS = 3  # below this a rank test across datasets cannot say anything (Friedman needs >= 2 blocks)


class StatsInputError(FmprobeError, ValueError):
    """Inputs a statistical test cannot be run on (too few methods or datasets, p-values outside [0, 1])."""


def holm(p_values: object) -> np.ndarray:
    """Holm-adjusted p-values, in the input order: step-down, monotone, capped at 1.

    The i-th smallest of m p-values is multiplied by (m - i + 1) and the running maximum is taken, so an
    adjusted p-value is never smaller than that of a more significant comparison. NaN entries (comparisons
    that could not be made) stay NaN and do not count towards m.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise StatsInputError(f"p-values must lie in [0, 1]; got {p[ok][(p[ok] < 0) | (p[ok] > 1)].tolist()}")
    out = np.full(p.shape, np.nan)
    finite = p[ok]
    m = len(finite)
    if m == 0:
        return out
    order = np.argsort(finite, kind="stable")
    scaled = (m - np.arange(m)) * finite[order]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    out[ok] = adjusted
    return out


def rank_table(scores: pd.DataFrame, higher_is_better: bool = True) -> pd.DataFrame:
    """Per dataset (row), each method's rank: 1 = best, ties share the average rank, NaN stays NaN."""
    return scores.rank(axis=1, ascending=not higher_is_better, method="average", na_option="keep")


def mean_ranks(scores: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Mean rank of each method over the datasets it has a score on (1 = best), best first.

    Ranks are taken within each dataset among the methods scored there; ``scores.notna().sum()`` tells how
    many datasets each mean is over.
    """
    ranks = rank_table(scores, higher_is_better).mean(axis=0)
    return ranks.sort_values(kind="stable")


@dataclass(frozen=True)
class Friedman:
    statistic: float
    p_value: float
    n_datasets: int
    n_methods: int


def complete(scores: pd.DataFrame) -> pd.DataFrame:
    """The methods (columns) scored on every dataset: rank tests need complete blocks."""
    return scores.loc[:, scores.notna().all(axis=0)]


def _check_size(scores: pd.DataFrame, min_methods: int, what: str) -> None:
    n, k = scores.shape
    if k < min_methods or n < MIN_DATASETS:
        raise StatsInputError(
            f"{what} needs at least {min_methods} methods scored on at least {MIN_DATASETS} datasets (every "
            f"method on every dataset); got {k} method(s) on {n} dataset(s). Run more datasets or backbones."
        )


def friedman(scores: pd.DataFrame) -> Friedman:
    """Friedman test of "all methods rank alike" over datasets (rows) x methods (columns), complete rows only."""
    _check_size(scores, MIN_METHODS, "the Friedman test")
    if scores.isna().any().any():
        raise StatsInputError("the Friedman test needs every method scored on every dataset; pass complete(scores).")
    res = _scipy.friedmanchisquare(*(scores[c].to_numpy(dtype=np.float64) for c in scores.columns))
    stat, p = float(res.statistic), float(res.pvalue)
    if not math.isfinite(p):  # every dataset ranks every method alike (no variance): nothing to reject
        stat, p = 0.0, 1.0
    return Friedman(stat, p, scores.shape[0], scores.shape[1])


def _wilcoxon_p(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    d = x - y
    if np.all(d == 0):  # identical on every dataset: no evidence of a difference
        return 0.0, 1.0
    res = _scipy.wilcoxon(x, y)
    return float(res.statistic), float(res.pvalue)


def pairwise_wilcoxon(scores: pd.DataFrame) -> pd.DataFrame:
    """Two-sided Wilcoxon signed-rank test for every pair of methods, Holm-corrected across the pairs.

    Columns: ``a``, ``b``, ``statistic``, ``p_value``, ``p_holm``. Needs complete rows (see :func:`complete`).
    """
    _check_size(scores, 2, "the pairwise Wilcoxon test")
    if scores.isna().any().any():
        raise StatsInputError("the Wilcoxon test needs every method scored on every dataset; pass complete(scores).")
    rows = []
    for a, b in itertools.combinations(scores.columns, 2):
        stat, p = _wilcoxon_p(scores[a].to_numpy(dtype=np.float64), scores[b].to_numpy(dtype=np.float64))
        rows.append({"a": a, "b": b, "statistic": stat, "p_value": p})
    out = pd.DataFrame(rows, columns=["a", "b", "statistic", "p_value"])
    out["p_holm"] = holm(out["p_value"].to_numpy())
    return out


def cliques(ranks: pd.Series, pairwise: pd.DataFrame, alpha: float = 0.05) -> list[tuple[str, ...]]:
    """Maximal runs of methods, in mean-rank order, no two of which differ significantly (Holm p >= alpha).

    These are the bars of a critical-difference diagram; only runs of two or more methods are returned.
    """
    significant = {frozenset((r.a, r.b)) for r in pairwise.itertuples() if math.isfinite(r.p_holm) and r.p_holm < alpha}
    order = list(ranks.index)
    runs: list[tuple[str, ...]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and all(
            frozenset((order[k], order[j + 1])) not in significant for k in range(i, j + 1)
        ):
            j += 1
        run = tuple(order[i : j + 1])
        if len(run) > 1 and not any(set(run) <= set(r) for r in runs):
            runs.append(run)
    return runs

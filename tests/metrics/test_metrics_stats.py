"""Multiple-comparison statistics against scipy (and statsmodels when installed) on known inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fmprobe.errors import FmprobeError
from fmprobe.metrics.stats import (
    StatsInputError,
    cliques,
    complete,
    friedman,
    holm,
    mean_ranks,
    pairwise_wilcoxon,
    rank_table,
)


def test_holm_known_values_monotone_and_capped() -> None:
    # R: p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm") -> 0.03 0.06 0.06 0.02
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6, 0.9]).tolist() == [1.0, 1.0, 1.0]  # 3 x 0.5 capped at 1; never below a smaller p's
    assert holm([0.01, 0.02, 0.5]) == pytest.approx([0.03, 0.04, 0.5])
    assert holm([0.02]).tolist() == [0.02]  # one comparison: nothing to correct
    out = holm([0.01, np.nan, 0.04])  # a comparison that could not be made does not count
    assert np.isnan(out[1]) and out[[0, 2]] == pytest.approx([0.02, 0.04])
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.2, 12)
    adj = holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0) and np.all(adj >= p) and np.all(adj <= 1)
    with pytest.raises(StatsInputError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])


def test_holm_matches_statsmodels() -> None:
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(1).uniform(0, 0.1, 15)
    expected = multitest.multipletests(p, method="holm")[1]
    assert holm(p) == pytest.approx(expected)


SCORES = pd.DataFrame(
    {"a": [0.91, 0.82, 0.77, 0.95, 0.66], "b": [0.90, 0.80, 0.77, 0.93, 0.60], "c": [0.70, 0.81, 0.60, 0.80, 0.50]},
    index=[f"d{i}" for i in range(5)],
)


def test_ranks_average_ties_like_scipy_and_lower_is_better() -> None:
    ranks = rank_table(SCORES)
    for name, row in SCORES.iterrows():
        assert ranks.loc[name].tolist() == stats.rankdata(-row.to_numpy()).tolist()  # 1 = best, ties averaged
    assert ranks.loc["d2", "a"] == ranks.loc["d2", "b"] == 1.5
    mr = mean_ranks(SCORES)
    assert list(mr.index) == ["a", "b", "c"] and mr["a"] == pytest.approx(np.mean(ranks["a"]))
    assert list(mean_ranks(SCORES, higher_is_better=False).index) == ["c", "b", "a"]
    gappy = SCORES.copy()
    gappy.loc["d0", "c"] = np.nan  # a method missing on a dataset: ranked among the methods that ran there
    assert mean_ranks(gappy)["c"] == pytest.approx(rank_table(gappy)["c"].dropna().mean())
    assert list(complete(gappy).columns) == ["a", "b"]


def test_friedman_matches_scipy_and_guards_small_inputs() -> None:
    res = friedman(SCORES)
    ref = stats.friedmanchisquare(*(SCORES[c] for c in SCORES))
    assert (res.statistic, res.p_value) == pytest.approx((ref.statistic, ref.pvalue))
    assert (res.n_datasets, res.n_methods) == (5, 3)
    with pytest.raises(StatsInputError, match="at least 3 methods"):
        friedman(SCORES[["a", "b"]])
    with pytest.raises(StatsInputError, match="got 3 method\\(s\\) on 2 dataset"):
        friedman(SCORES.iloc[:2])
    gappy = SCORES.copy()
    gappy.iloc[0, 2] = np.nan
    with pytest.raises(FmprobeError, match="complete"):
        friedman(gappy)


def test_pairwise_wilcoxon_is_scipy_plus_holm() -> None:
    pw = pairwise_wilcoxon(SCORES)
    assert [(r.a, r.b) for r in pw.itertuples()] == [("a", "b"), ("a", "c"), ("b", "c")]
    for r in pw.itertuples():
        ref = stats.wilcoxon(SCORES[r.a], SCORES[r.b])
        assert (r.statistic, r.p_value) == pytest.approx((ref.statistic, ref.pvalue))
    assert pw["p_holm"].to_numpy() == pytest.approx(holm(pw["p_value"].to_numpy()))
    same = pd.DataFrame({"x": [0.5, 0.6, 0.7], "y": [0.5, 0.6, 0.7]})
    assert pairwise_wilcoxon(same)["p_value"].tolist() == [1.0]  # identical everywhere: no evidence, not an error


def test_cliques_are_maximal_runs_in_rank_order() -> None:
    ranks = pd.Series({"a": 1.2, "b": 1.9, "c": 3.1, "d": 3.8})
    pw = pd.DataFrame(
        [("a", "b", 0.6), ("a", "c", 0.01), ("a", "d", 0.01), ("b", "c", 0.2), ("b", "d", 0.01), ("c", "d", 0.3)],
        columns=["a", "b", "p_holm"],
    )
    assert cliques(ranks, pw, alpha=0.05) == [("a", "b"), ("b", "c"), ("c", "d")]
    assert cliques(ranks, pw, alpha=0.005) == [("a", "b", "c", "d")]  # nothing significant: one bar
    assert cliques(ranks, pw.assign(p_holm=0.0), alpha=0.05) == []  # everything differs: no bar

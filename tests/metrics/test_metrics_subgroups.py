"""Subgroup metrics as plain functions of arrays: groups, the minimum size, the gap's paired bootstrap, Holm, bands."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fmprobe.metrics import MetricInputError, compute_all
from fmprobe.metrics.stats import holm
from fmprobe.metrics.subgroups import (
    attribute_values,
    band_names,
    band_values,
    gap,
    subgroup_results,
    unit_values,
)


def _binary(n: int, separation: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = np.arange(n) % 2
    s = 1 / (1 + np.exp(-(separation * (2 * y - 1) + rng.normal(size=n))))
    return y, np.stack([1 - s, s], axis=1)


def _evaluate(y: np.ndarray, s: np.ndarray, n_resamples: int = 200):  # type: ignore[no-untyped-def]
    return lambda rows: compute_all(y[rows], s[rows], "binary", n_resamples=n_resamples, seed=0)


def _data(gap_size: float, n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two groups of n: group "a" separates by 2.0, group "b" by 2.0 - gap_size."""
    rng = np.random.default_rng(seed)
    ya, sa = _binary(n, 2.0, rng)
    yb, sb = _binary(n, 2.0 - gap_size, rng)
    return np.r_[ya, yb], np.r_[sa, sb], np.array(["a"] * n + ["b"] * n, dtype="<U8")


def test_group_values_are_sklearn_on_the_group_rows_and_unknowns_are_excluded() -> None:
    y, s, groups = _data(1.0)
    groups[:7] = ""  # unknown
    (result,) = subgroup_results({"g": groups}, _evaluate(y, s), ["roc_auc"], "roc_auc", y, s, n_resamples=200)
    assert [g.label for g in result.groups] == ["g=a", "g=b"] and result.n_unknown == 7
    for g in result.groups:
        rows = groups == g.value
        auc = g.metrics["roc_auc"]
        assert g.n == rows.sum()
        assert auc.value == pytest.approx(roc_auc_score(y[rows], s[rows, 1]))
        assert auc.ci_low < auc.value < auc.ci_high
    n, worst = result.summary["worst[roc_auc]"]
    assert worst.detail == "g=b; 7 unknown excluded" and n == (groups == "b").sum()
    assert worst.value == result.groups[1].metrics["roc_auc"].value


def test_a_group_under_the_minimum_size_has_no_number() -> None:
    y, s, groups = _data(0.0, n=100)
    groups[:12] = "c"
    names = ["roc_auc", "accuracy"]
    (result,) = subgroup_results({"g": groups}, _evaluate(y, s, 0), names, "roc_auc", y, s, min_size=30)
    small = {g.value: g for g in result.groups}["c"]
    assert small.n == 12 and set(small.metrics) == set(names)
    for value in small.metrics.values():
        assert value.value is None and value.reason == "group too small: n=12 < 30 (--subgroup-min-size)"
    (kept,) = subgroup_results({"g": groups}, _evaluate(y, s, 0), names, "roc_auc", y, s, min_size=12)
    assert {g.value: g for g in kept.groups}["c"].metrics["roc_auc"].ok


def test_the_gap_ci_excludes_zero_for_a_real_gap_and_covers_it_for_none() -> None:
    y, s, groups = _data(1.5)
    a, b = np.flatnonzero(groups == "a"), np.flatnonzero(groups == "b")
    real = gap("roc_auc", y, s, a, b, n_resamples=500)
    expected = roc_auc_score(y[a], s[a, 1]) - roc_auc_score(y[b], s[b, 1])
    assert real.value == pytest.approx(expected) and real.value > 0.05
    assert 0 < real.ci_low < real.value < real.ci_high and real.p_value < 0.01
    y, s, groups = _data(0.0, seed=3)
    a, b = np.flatnonzero(groups == "a"), np.flatnonzero(groups == "b")
    none = gap("roc_auc", y, s, a, b, n_resamples=500)
    assert none.ci_low < 0 < none.ci_high and none.p_value > 0.05


def test_a_lower_is_better_metric_gap_is_how_much_worse_the_worst_group_is() -> None:
    y, s, groups = _data(1.5)
    a, b = np.flatnonzero(groups == "a"), np.flatnonzero(groups == "b")
    ece_a, ece_b = (compute_all(y[r], s[r], "binary", metrics=["ece"])["ece"].value for r in (a, b))
    assert gap("ece", y, s, a, b).value == pytest.approx(ece_b - ece_a)  # a's ECE lower (better): positive


def test_summaries_are_holm_adjusted_across_attributes() -> None:
    y, s, groups = _data(1.5)
    rng = np.random.default_rng(5)
    noise = rng.choice(["x", "y"], size=len(y))
    one = np.array(["only"] * len(y))
    attrs = {"g": groups, "noise": noise, "one": one}
    results = subgroup_results(attrs, _evaluate(y, s, 0), ["roc_auc"], "roc_auc", y, s, n_resamples=300)
    by = {r.attribute: r for r in results}
    pairs = ((by["g"], groups), (by["noise"], noise))
    raw = [gap("roc_auc", y, s, *_pair(r, v), n_resamples=300, seed=0).p_value for r, v in pairs]
    adjusted = holm(raw)
    for name, q in zip(("g", "noise"), adjusted, strict=True):
        _, value = by[name].summary["gap[roc_auc]"]
        assert value.p_value == pytest.approx(q) and "Holm over 2 attributes" in value.detail
    _, g_gap = by["g"].summary["gap[roc_auc]"]
    assert g_gap.detail == "g=b vs g=a; Holm over 2 attributes" and g_gap.p_value < 0.05
    for name in ("worst[roc_auc]", "gap[roc_auc]"):
        n, missing = by["one"].summary[name]
        assert missing.value is None and "fewer than 2 groups" in missing.reason and n == 0


def _pair(result, values):  # type: ignore[no-untyped-def]
    """(best rows, worst rows) of an attribute result, as the summary chose them."""
    ranked = sorted((g for g in result.groups), key=lambda g: g.metrics["roc_auc"].value)
    return np.flatnonzero(values == ranked[-1].value), np.flatnonzero(values == ranked[0].value)


def test_a_group_with_one_class_is_a_missing_row_with_the_reason() -> None:
    y, s, groups = _data(0.0, n=100)
    groups[(groups == "a") & (y == 0)] = "a0"
    (result,) = subgroup_results({"g": groups}, _evaluate(y, s, 0), ["roc_auc"], "roc_auc", y, s)
    a0 = {g.value: g for g in result.groups}["a0"].metrics["roc_auc"]
    assert a0.value is None and "only class" in a0.reason


def test_age_bands_and_unknown_ages() -> None:
    assert band_names((40, 60, 80)) == ["<40", "40–60", "60–80", "≥80"]
    ages = np.array(["35", "40", "59.5", "60", "85", "", "unknown", "80"])
    assert band_values(ages, (40, 60, 80)).tolist() == ["<40", "40–60", "40–60", "60–80", "≥80", "", "", "≥80"]
    meta = {"age": ages, "sex": np.array(["F"] * 8)}
    assert attribute_values(meta, "age_band", {"age": (50,)}).tolist()[:2] == ["<50", "<50"]
    assert attribute_values(meta, "sex", {}).tolist() == ["F"] * 8
    with pytest.raises(MetricInputError, match=r"'site' is not in the metadata \(stored keys: age, sex"):
        attribute_values(meta, "site", {"age": (40,)})
    with pytest.raises(MetricInputError, match="--bands sex=EDGES"):
        attribute_values(meta, "sex_band", {})


def test_per_study_values_are_the_ones_its_views_share() -> None:
    units = np.array(["s1", "s1", "s2", "s2", "s3"])
    views = np.array(["frontal", "lateral", "frontal", "frontal", "lateral"])
    assert unit_values(units, views, np.array(["s2", "s1", "s3"])).tolist() == ["frontal", "", "lateral"]

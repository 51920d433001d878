"""The report's subgroup section and the recommendation's subgroup caveat, on constructed subgroup rows."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from fmprobe.metrics import bootstrap_ci, get_metric
from fmprobe.report import write_report
from fmprobe.report.recommend import recommend, subgroup_caveat
from fmprobe.report.subgroups import AttributeSummary, group_values, summaries
from fmprobe.results import ResultRow, append_rows, cell_id, read_results, save_predictions

N_TEST = 200
B = 60  # bootstrap resamples: the section reads recorded rows, the bootstrap only serves the other sections
TOO_SMALL = "group too small: n=12 < 30 (--subgroup-min-size)"
# (subgroup, n, value, ci_low, ci_high) per group of the recommended model; the baseline's are 0.1 lower
GROUPS = [
    ("sex=female", 104, 0.912, 0.871, 0.948),
    ("sex=male", 96, 0.897, 0.850, 0.940),
    ("age_band=40–60", 60, 0.920, 0.866, 0.962),  # sorted as text, as the prober writes them
    ("age_band=60–80", 58, 0.881, 0.820, 0.935),
    ("age_band=<40", 70, 0.951, 0.910, 0.985),
    ("age_band=≥80", 12, math.nan, math.nan, math.nan),
]
# attribute -> (worst group, worst [CI], gap [CI], Holm p, detail) of the recommended model
SUMMARIES = {
    "sex": ("sex=male", (0.897, 0.850, 0.940), (0.015, -0.040, 0.070), 0.62, "sex=male vs sex=female; Holm over 2 attributes"),
    "age_band": ("age_band=60–80; 14 unknown excluded", (0.881, 0.820, 0.935), (0.070, 0.030, 0.110), 0.003,
                 "age_band=60–80 vs age_band=<40; Holm over 2 attributes; 14 unknown excluded"),
}  # fmt: skip


def _scores(y: np.ndarray, strength: float, noise: int) -> np.ndarray:
    logit = strength * (2 * y - 1) + np.random.default_rng(noise).normal(size=len(y))
    p = 1 / (1 + np.exp(-logit))
    return np.column_stack([1 - p, p])


def _overall_row(results_dir: Path, model: str, strength: float, val: float, baseline: bool) -> ResultRow:
    y = np.random.default_rng(0).integers(0, 2, N_TEST)
    ids = [f"ds/{i:04d}.png" for i in range(N_TEST)]
    key = dict(dataset="ds", backbone=model, weights="pretrained", readout="cls", resolution=224, probe="logreg",
               train_fraction=1.0, repeat=0, seed=0, fingerprint=f"fp-{model}")  # fmt: skip
    cid = cell_id(**key)
    score = _scores(y, strength, len(model))
    pred = save_predictions(results_dir, cid, ids, y, score, {"task": "binary", **key})
    ci = bootstrap_ci("roc_auc", y, score, n_resamples=100, seed=0)
    return ResultRow(task="binary", params=json.dumps({"C": 1.0}), metric="roc_auc", value=get_metric("roc_auc")(y, score),
                     ci_low=ci.low, ci_high=ci.high, missing_reason="", is_primary=True, n_train=500, n_test=N_TEST,
                     val_score=val, cell_id=cid, predictions=pred, imagenet_baseline=baseline, n_val=100, **key)  # fmt: skip


def _subgroup_rows(row: ResultRow, shift: float, p_sex: float, p_age: float) -> list[ResultRow]:
    """The prober's rows for one cell: a row per group, and worst/gap rows per attribute (numbers constructed)."""
    out = []
    for sub, n, v, lo, hi in GROUPS:
        reason = TOO_SMALL if math.isnan(v) else ""
        out.append(dataclasses.replace(row, subgroup=sub, n_test=n, value=v - shift, ci_low=lo - shift,
                                       ci_high=hi - shift, missing_reason=reason))  # fmt: skip
    for attr, (worst, (w, wl, wh), (g, gl, gh), _, detail) in SUMMARIES.items():
        p = p_sex if attr == "sex" else p_age
        out.append(dataclasses.replace(row, metric="worst[roc_auc]", subgroup=attr, is_primary=False, value=w - shift,
                                       ci_low=wl - shift, ci_high=wh - shift, detail=worst))  # fmt: skip
        out.append(dataclasses.replace(row, metric="gap[roc_auc]", subgroup=attr, is_primary=False, value=g,
                                       ci_low=gl, ci_high=gh, p_value=p, detail=detail))  # fmt: skip
    return out


def write_study(results_dir: Path, subgroups: bool = True, p_age: float = 0.003) -> Path:
    """Two backbones on one binary dataset: ``fm`` (chosen on validation) and the ImageNet baseline ``imnet``."""
    fm = _overall_row(results_dir, "fm", 2.0, 0.93, baseline=False)
    imnet = _overall_row(results_dir, "imnet", 1.0, 0.85, baseline=True)
    rows = [fm, imnet]
    if subgroups:
        rows += _subgroup_rows(fm, 0.0, 0.62, p_age) + _subgroup_rows(imnet, 0.1, 0.9, 0.5)
    append_rows(results_dir, rows)
    return results_dir


def _table(paths, name: str) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """An exported table's cells, footnote numbers ("[2]") left out."""
    (path,) = [p for p in paths.tables if p.name == f"{name}.csv"]
    with open(path, newline="", encoding="utf-8") as fh:
        return [[re.sub(r"\[\d+\]$", "", cell) for cell in row] for row in csv.reader(fh)]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_study(tmp_path_factory.mktemp("subgroups"))


@pytest.fixture(scope="module")
def report(study: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return write_report(study, tmp_path_factory.mktemp("report"), n_resamples=B)


def test_rows_read_back_as_recorded(study: Path) -> None:
    df = read_results(study)
    fm = df.loc[(df["backbone"] == "fm") & (df["subgroup"] == ""), "cell_id"].iloc[0]
    groups = group_values(df, fm, "roc_auc")
    assert list(groups) == ["sex", "age_band"]  # order of the rows, not alphabetical
    assert [g.group for g in groups["age_band"]] == ["<40", "40–60", "60–80", "≥80"]  # bands from low to high
    small = groups["age_band"][-1]
    assert small.too_small and small.n == 12 and math.isnan(small.value) and small.short() == "too small (n=12)"
    age = summaries(df, fm, "roc_auc")["age_band"]
    assert (age.worst_group, age.best_group, age.gap, age.p_holm) == ("age_band=60–80", "age_band=<40", 0.07, 0.003)
    assert age.notes == "Holm over 2 attributes; 14 unknown excluded" and age.significant(0.05)
    assert not age.significant(0.001)


def test_worst_gap_table_equals_the_rows(report) -> None:  # type: ignore[no-untyped-def]
    header, *body = _table(report, "ds_subgroups_worst_gap")
    assert header == ["backbone", "attribute", "whole test set", "worst group", "worst", "gap (best − worst)",
                      "best group", "p (Holm)"]  # fmt: skip
    rows = {(r[0], r[1]): r for r in body}
    assert set(rows) == {(f"{m} + logreg", a) for m in ("fm", "imnet") for a in ("sex", "age_band")}
    fm_age = rows["fm + logreg", "age_band"]
    assert fm_age[3:] == ["60–80", "0.881 [0.820, 0.935]", "0.070 [0.030, 0.110]", "<40", "0.003*"]
    assert rows["fm + logreg", "sex"][7] == "0.620"  # not significant: no mark
    assert rows["imnet + logreg", "age_band"][4] == "0.781 [0.720, 0.835]"  # the baseline's own rows
    md = report.markdown.read_text(encoding="utf-8")
    assert "### Subgroups" in md and "Holm over 2 attributes; 14 unknown excluded" in md


def test_group_table_shows_too_small_groups_as_such(report) -> None:  # type: ignore[no-untyped-def]
    header, *body = _table(report, "ds_subgroups_groups")
    assert header == ["attribute", "group", "n", "recommended", "baseline"]
    assert [r[1] for r in body] == ["female", "male", "<40", "40–60", "60–80", "≥80"]
    by_group = {(r[0], r[1]): r for r in body}
    assert by_group["sex", "female"] == ["sex", "female", "104", "0.912 [0.871, 0.948]", "0.812 [0.771, 0.848]"]
    assert by_group["age_band", "≥80"][2:] == ["12", "too small (n=12)", "too small (n=12)"]


def test_forest_plots_written_as_png_and_svg(report) -> None:  # type: ignore[no-untyped-def]
    names = {p.name for p in report.plots}
    for attr in ("sex", "age_band"):
        assert {f"subgroups_ds_{attr}.png", f"subgroups_ds_{attr}.svg"} <= names
        png = report.out_dir / "plots" / f"subgroups_ds_{attr}.png"
        assert png.stat().st_size > 5000
    svg = (report.out_dir / "plots" / "subgroups_ds_age_band.svg").read_text(encoding="utf-8")
    assert "too small (n=12)" in svg and "≥80 (n=12)" in svg  # said instead of a point, n in the label
    assert "gap 0.070" in svg and "Holm p 0.003" in svg  # the legend says the gap (wrapped over lines)


def test_other_sections_read_whole_test_set_rows_only(report, study: Path) -> None:  # type: ignore[no-untyped-def]
    df = read_results(study)
    value = df.loc[(df["backbone"] == "fm") & (df["subgroup"] == ""), "value"].iloc[0]
    header, *body = _table(report, "ds_all-metrics")
    (fm,) = [r for r in body if r[0].startswith("fm")]
    assert fm[header.index("roc_auc")].startswith(f"{value:.3f}")


def test_caveat_names_a_significant_gap(study: Path) -> None:
    rec = recommend(study, n_resamples=B)
    (d,) = rec.datasets
    caveat = "But roc_auc is 0.070 [0.030, 0.110] lower for age_band=60–80 than for age_band=<40 (Holm p = 0.003)."
    assert d.chosen.model == "fm" and d.subgroup_caveat == caveat and d.sentence.endswith(caveat)
    assert d.sentence.startswith("Use fm (cls, 224 px) + logreg: roc_auc ")  # the sentence before it is unchanged
    assert [g.attribute for g in d.subgroup_gaps] == ["age_band"]  # sex (p = 0.62) is not said
    assert caveat in rec.sentences[0]  # what the CLI prints after a run
    frame = rec.to_frame()
    gap = frame[frame["role"] == "subgroup gap"]
    assert gap[["subgroup", "value", "p_holm"]].values.tolist() == [["age_band", 0.07, 0.003]]


def test_no_caveat_at_or_above_alpha(tmp_path: Path, study: Path) -> None:
    (d,) = recommend(study, n_resamples=B, alpha=0.001).datasets
    assert d.subgroup_caveat == "" and "age_band" not in d.sentence and not d.subgroup_gaps
    (d,) = recommend(write_study(tmp_path / "r", p_age=0.05), n_resamples=B).datasets  # p == alpha: not below
    assert d.subgroup_caveat == ""
    paths = write_report(study, tmp_path / "report", n_resamples=B, alpha=0.001)
    assert "lower for age_band" not in paths.markdown.read_text(encoding="utf-8")


def test_detail_parts_found_wherever_they_are() -> None:
    g = AttributeSummary("sex", 0.8, 0.7, 0.9, "sex=male", 0.05, 0.01, 0.09, 0.02,
                         "per lesion; sex=male vs sex=female; Holm over 2 attributes")  # fmt: skip
    assert (g.best_group, g.notes) == ("sex=female", "per lesion; Holm over 2 attributes")


def test_caveat_direction_for_a_lower_is_better_metric() -> None:
    g = AttributeSummary("site", 0.2, 0.15, 0.25, "site=B", -0.05, -0.08, -0.02, 0.01, "site=B vs site=A")
    assert subgroup_caveat("ece", [g]) == "But ece is 0.050 [0.020, 0.080] higher for site=B than for site=A (Holm p = 0.010)."


def test_no_section_without_subgroup_rows(tmp_path: Path) -> None:
    paths = write_report(write_study(tmp_path / "r", subgroups=False), tmp_path / "report", n_resamples=B)
    md = paths.markdown.read_text(encoding="utf-8")
    assert "### Subgroups" not in md and "worst group" not in md
    assert not any("subgroups" in p.name for p in [*paths.plots, *paths.tables])


def test_a_table_without_the_subgroup_column_still_reports(tmp_path: Path) -> None:
    df = read_results(write_study(tmp_path / "r", subgroups=False)).drop(columns=["subgroup", "p_value"])
    df.to_csv(tmp_path / "old.csv", index=False)  # as an fmprobe before subgroups wrote it
    paths = write_report(tmp_path / "old.csv", tmp_path / "report", n_resamples=B)
    md = paths.markdown.read_text(encoding="utf-8")
    assert "### Subgroups" not in md and "Use fm (cls, 224 px) + logreg" in md
    assert recommend(tmp_path / "old.csv", n_resamples=B).datasets[0].subgroup_caveat == ""

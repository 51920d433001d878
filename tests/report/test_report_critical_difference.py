"""The critical-difference diagram across datasets (fmprobe/report/critical_difference.py)."""

from __future__ import annotations

import re
from pathlib import Path

import _report_study
import pandas as pd
import pytest
from _report_study import build_study

from fmprobe.report import plots, write_report
from fmprobe.report.critical_difference import cd_chart
from fmprobe.report.recommend import Ranking


def test_the_diagram_puts_methods_on_the_rank_axis_and_cliques_as_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranks = {"alpha_net": 1.2, "beta_net": 2.0, "gamma_net": 2.9, "delta_net": 3.9}
    pairwise = pd.DataFrame([{"a": a, "b": b, "statistic": 0.0, "p_value": 0.1, "p_holm": 0.2}
                             for a, b in [("alpha_net", "beta_net"), ("alpha_net", "gamma_net"),
                                          ("beta_net", "gamma_net")]])  # fmt: skip
    r = Ranking("", ranks, dict.fromkeys(ranks, 5) | {"delta_net": 3}, 5, 0.04, pairwise,
                [("alpha_net", "beta_net"), ("beta_net", "gamma_net")])  # fmt: skip
    saved = []
    real = plots._save
    monkeypatch.setattr(
        "fmprobe.report.critical_difference._save", lambda f, p, **kw: (saved.append(f), real(f, p, **kw))[1]
    )
    png = cd_chart(r, "title", tmp_path / "cd.png")
    assert png.exists() and png.with_suffix(".svg").exists()
    (fig,) = saved
    ax = fig.axes[0]
    lines = {ln.get_gid(): ln for ln in ax.lines if ln.get_gid()}
    for m, rank in ranks.items():
        assert lines[f"method:{m}"].get_xdata()[0] == rank  # each method drops from its mean rank
    bars = {g: ln.get_xdata() for g, ln in lines.items() if g.startswith("clique:")}
    assert set(bars) == {"clique:alpha_net~beta_net", "clique:beta_net~gamma_net"}
    lo, hi = bars["clique:alpha_net~beta_net"]
    assert lo < 1.2 and 2.0 < hi < 2.9  # spans its members, not the next method
    fig.canvas.draw()
    texts = [t for t in ax.texts if "_net" in t.get_text()]
    assert len(texts) == 4 and all(fig.bbox.x0 <= t.get_window_extent().x0 and t.get_window_extent().x1 <=
                                   fig.bbox.x1 for t in texts)  # fmt: skip
    grey = next(t for t in texts if "delta_net" in t.get_text())
    assert grey.get_color() != texts[0].get_color()  # not in the tests (not on every dataset): drawn grey


def test_the_report_draws_the_diagram_with_three_datasets_and_says_the_tests_are_weak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(_report_study.DATASETS, "synth_third", ("binary", ["no", "yes"]))
    build_study(tmp_path / "study")
    md = write_report(tmp_path / "study", tmp_path / "report", n_resamples=50).markdown.read_text()
    head = md.index("## Across datasets: critical-difference diagram")
    assert md.index("## Recommendation") < head < md.index("## Headline")
    section = md[head : md.index("## Headline")]
    assert "With 3 datasets these tests have little power" in section
    assert re.search(r"!\[critical difference overall\]\(plots/critical_difference_overall\.png\)", section)
    assert "Vector: [plots/critical_difference_overall.svg]" in section


def test_no_diagram_below_three_datasets(report) -> None:  # type: ignore[no-untyped-def]
    assert "critical-difference" not in report.markdown.read_text()

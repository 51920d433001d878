"""The report's subgroup section: where a configuration fails, read from the subgroup rows of the results table.

The prober slices each cell's test set by sample metadata (no refit) and writes, beside the cell's whole-test-set
rows (``subgroup == ""``), one row per group (``subgroup = "ATTR=VALUE"``, ``n_test`` = the group's size; a group
under the minimum size is NaN with its reason, never a number) and per attribute two summary rows of the primary
metric ``m``: ``worst[m]`` (the worst eligible group's value and CI, the group in ``detail``) and ``gap[m]`` (best −
worst, paired-bootstrap CI, ``p_value`` Holm-adjusted across the attributes, ``detail`` "WORST vs BEST; ...").

This module reads those rows back (:func:`group_values`, :func:`summaries`: the one reader, which the
recommendation's caveat uses too) and shows them per dataset: a forest plot per attribute of the recommended
configuration beside the baseline's, a table of each group's value, and a table of worst group and gap per
backbone (each backbone's configuration chosen on validation, as in the main tables). Results without subgroup
rows (older tables included) get no section at all.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fmprobe._io import slug
from fmprobe.report.doc import MISSING, Block, Cell, Heading, Para, Table
from fmprobe.results import OVERALL

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from fmprobe.report.build import DatasetContext

TOO_SMALL = "group too small"  # how a too-small group's missing_reason starts (the prober's --subgroup-min-size)
SIGNIFICANT_MARK = "*"  # after a significant p (named in words in captions: a bare * would start Markdown emphasis)


def worst_metric(metric: str) -> str:
    """The ``metric`` of a worst-group summary row of ``metric``."""
    return f"worst[{metric}]"


def gap_metric(metric: str) -> str:
    """The ``metric`` of a largest-gap summary row of ``metric``."""
    return f"gap[{metric}]"


def has_subgroups(df: pd.DataFrame) -> bool:
    """Whether any row is a subgroup row (a table without the column, written before it existed, has none)."""
    return "subgroup" in df.columns and bool((df["subgroup"].astype(str) != OVERALL).any())


def _finite(x: object) -> float:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


@dataclass(frozen=True)
class GroupValue:
    """One group's metric on its slice of the test set: value [CI] and size, or NaN with the reason."""

    attribute: str
    group: str  # the VALUE of ATTR=VALUE
    n: int
    value: float
    ci_low: float
    ci_high: float
    reason: str = ""

    @property
    def label(self) -> str:
        return f"{self.attribute}={self.group}"

    @property
    def too_small(self) -> bool:
        return self.reason.startswith(TOO_SMALL)

    def short(self) -> str:
        """What a plot or table shows for a group without a number."""
        return f"too small (n={self.n})" if self.too_small else f"n/a ({self.reason or 'no value'})"


@dataclass(frozen=True)
class AttributeSummary:
    """The worst group and the largest gap between groups of one attribute, for one cell and metric."""

    attribute: str
    worst: float
    worst_low: float
    worst_high: float
    worst_group: str  # "ATTR=VALUE" ('' when missing)
    gap: float  # best − worst (as recorded)
    gap_low: float
    gap_high: float
    p_holm: float  # Holm-adjusted across attributes
    detail: str  # the gap row's detail: "WORST vs BEST; Holm over 3 attributes; ..."
    reason: str = ""  # why there is no gap (fewer than two eligible groups); '' when there is one

    def _parts(self) -> list[str]:
        return [p.strip() for p in self.detail.split(";") if p.strip()]

    @property
    def best_group(self) -> str:
        """The right side of the gap detail's "WORST vs BEST" part ('' when it has none)."""
        versus = [p for p in self._parts() if " vs " in p]
        return versus[0].partition(" vs ")[2].strip() if versus else ""

    @property
    def notes(self) -> str:
        """The gap detail without its "WORST vs BEST" part (Holm family, unknowns excluded, aggregation)."""
        return "; ".join(p for p in self._parts() if " vs " not in p)

    def significant(self, alpha: float) -> bool:
        return math.isfinite(self.p_holm) and self.p_holm < alpha


def _cell_rows(df: pd.DataFrame, cell_id: str) -> pd.DataFrame:
    if not has_subgroups(df):
        return df.iloc[0:0]
    return df[(df["cell_id"] == cell_id) & (df["subgroup"].astype(str) != OVERALL)]


_BAND = re.compile(r"^(?:<(?P<below>-?[\d.]+)|(?P<low>-?[\d.]+)–-?[\d.]+|≥(?P<above>-?[\d.]+))$")


def _band_start(group: str) -> float | None:
    """Where a derived band (``<40``, ``40–60``, ``≥80``, as the prober names them) starts; None for other values."""
    m = _BAND.match(group)
    if m is None:
        return None
    if m["below"] is not None:
        return -math.inf
    return float(m["low"] if m["low"] is not None else m["above"])


def _in_order(groups: list[GroupValue]) -> list[GroupValue]:
    """An attribute's groups as a reader expects them: bands from low to high (their names sort ``40–60`` before
    ``<40``), anything else in the order of its rows."""
    starts = [s for g in groups if (s := _band_start(g.group)) is not None]
    if len(starts) != len(groups):
        return groups
    return [groups[i] for i in np.argsort(starts, kind="stable")]


def group_values(df: pd.DataFrame, cell_id: str, metric: str) -> dict[str, list[GroupValue]]:
    """Attribute -> its groups' values of ``metric`` for one cell: attributes in the order of the rows, groups too
    except a derived attribute's bands, which go from low to high (``<40, 40–60, 60–80, ≥80``)."""
    rows = _cell_rows(df, cell_id)
    rows = rows[(rows["metric"] == metric) & rows["subgroup"].astype(str).str.contains("=", regex=False)]
    out: dict[str, list[GroupValue]] = {}
    for r in rows.drop_duplicates("subgroup", keep="last").itertuples(index=False):
        attribute, _, group = str(r.subgroup).partition("=")
        out.setdefault(attribute, []).append(
            GroupValue(attribute, group, int(r.n_test), _finite(r.value), _finite(r.ci_low), _finite(r.ci_high),
                       str(r.missing_reason))  # fmt: skip
        )
    return {attribute: _in_order(groups) for attribute, groups in out.items()}


def _group_named(attribute: str, detail: str) -> str:
    """The ``ATTR=VALUE`` part of a worst row's detail ("age_band=≥80; 14 unknown excluded")."""
    return next((p.strip() for p in detail.split(";") if p.strip().startswith(f"{attribute}=")), detail)


def summaries(df: pd.DataFrame, cell_id: str, metric: str) -> dict[str, AttributeSummary]:
    """Attribute -> worst group and gap of ``metric`` for one cell (an attribute needs its ``gap`` row)."""
    rows = _cell_rows(df, cell_id)
    rows = rows[~rows["subgroup"].astype(str).str.contains("=", regex=False)]
    worst = rows[rows["metric"] == worst_metric(metric)].drop_duplicates("subgroup", keep="last").set_index("subgroup")
    out: dict[str, AttributeSummary] = {}
    for g in rows[rows["metric"] == gap_metric(metric)].drop_duplicates("subgroup", keep="last").itertuples(index=False):
        attribute = str(g.subgroup)
        w = worst.loc[attribute] if attribute in worst.index else None
        reason = str(g.missing_reason) if pd.isna(g.value) else ""
        out[attribute] = AttributeSummary(
            attribute,
            _finite(w["value"]) if w is not None else math.nan,
            _finite(w["ci_low"]) if w is not None else math.nan,
            _finite(w["ci_high"]) if w is not None else math.nan,
            _group_named(attribute, str(w["detail"])) if w is not None and pd.notna(w["value"]) else "",
            _finite(g.value), _finite(g.ci_low), _finite(g.ci_high), _finite(g.p_value), str(g.detail), reason,
        )  # fmt: skip
    return out


def attributes(df: pd.DataFrame, cell_ids: Sequence[str], metric: str) -> list[str]:
    """The attributes any of the cells has group rows for, in order of appearance."""
    seen: dict[str, None] = {}
    for cid in cell_ids:
        seen.update(dict.fromkeys(group_values(df, cid, metric)))
        seen.update(dict.fromkeys(summaries(df, cid, metric)))
    return list(seen)


# ------------------------------------------------------------------------------------------------ forest plot


@dataclass(frozen=True)
class Series:
    """One configuration's groups in a forest plot."""

    label: str
    color: tuple[float, ...] | str
    groups: list[GroupValue]
    overall: float  # the cell's whole-test-set value (a dashed line); NaN: none
    gap: str = ""  # the attribute's gap, as the legend says it ('' when there is none)


def _row_labels(series: Sequence[Series]) -> list[tuple[str, int]]:
    """(group, n) per plot row: the union of the series' groups in order of appearance."""
    rows: dict[str, int] = {}
    for s in series:
        for g in s.groups:
            rows.setdefault(g.group, g.n)
    return list(rows.items())


def forest_chart(title: str, metric: str, attribute: str, series: Sequence[Series], path: Path) -> Path:
    """Forest plot: one row per group (labelled with its n), each series' value with its 95% CI, offset vertically;
    a group without a number shows why ("too small (n=12)") instead of a point; dashed: each series' whole test set.
    matplotlib is imported here, not with the module: the recommendation reads this module's rows and stays light."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from fmprobe.report import plots

    rows = _row_labels(series)
    k = len(series)
    fig = Figure(figsize=(7.8, 1.3 + 0.32 * len(rows) * max(1.0, 0.75 * k)))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    offsets = np.linspace(-0.18, 0.18, k) if k > 1 else np.zeros(1)
    index = {group: i for i, (group, _) in enumerate(rows)}
    for j, s in enumerate(series):
        marker = "os^D"[j % 4]
        ok = [g for g in s.groups if math.isfinite(g.value)]
        y = np.array([index[g.group] + offsets[j] for g in ok])
        v = np.array([g.value for g in ok])
        lo = np.array([g.ci_low if math.isfinite(g.ci_low) else g.value for g in ok])
        hi = np.array([g.ci_high if math.isfinite(g.ci_high) else g.value for g in ok])
        said = [f"whole test set {s.overall:.3f} (dashed)"] * math.isfinite(s.overall) + [s.gap] * bool(s.gap)
        label = "\n".join(textwrap.wrap(s.label, 40) + textwrap.wrap("; ".join(said), 40))
        ax.errorbar(v, y, xerr=np.vstack([v - lo, hi - v]) if len(ok) else None, fmt=marker, color=s.color, ms=5,
                    capsize=2.5, elinewidth=1.2, label=label)  # fmt: skip
        if math.isfinite(s.overall):
            ax.axvline(s.overall, color=s.color, ls="--", lw=0.9, alpha=0.7)
    _missing_labels(ax, series, index, offsets)
    ax.set_yticks(range(len(rows)), [f"{group} (n={n})" for group, n in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first group on top
    ax.set_ylabel(attribute)
    ax.set_xlabel(f"{metric} on the group's test samples (95% bootstrap CI)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7.5, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    plots.fit_title(fig, ax, title)
    return plots._save(fig, path)


def _missing_labels(ax: Axes, series: Sequence[Series], index: dict[str, int], offsets: np.ndarray) -> None:
    """Text instead of a point for groups without a number: once per row when every series says the same."""
    by_row: dict[int, list[tuple[int, GroupValue]]] = {}
    for j, s in enumerate(series):
        for g in s.groups:
            if not math.isfinite(g.value):
                by_row.setdefault(index[g.group], []).append((j, g))
    transform = ax.get_yaxis_transform()  # x in axes fraction, y in data
    for i, missing in by_row.items():
        texts = {g.short() for _, g in missing}
        if len(missing) == len(series) and len(texts) == 1:
            ax.text(0.02, i, texts.pop(), transform=transform, va="center", fontsize=8, color="#555555", style="italic")
            continue
        for j, g in missing:
            ax.text(0.02, i + offsets[j], g.short(), transform=transform, va="center", fontsize=7,
                    color=series[j].color, style="italic")  # fmt: skip


# ------------------------------------------------------------------------------------------------ section

SUBGROUP_NOTE = (
    "Each configuration's probe was fitted once on the whole training split; the subgroups only slice its test "
    "predictions by sample metadata (no refit). Per group: the metric on that group's test samples with its 95% "
    "bootstrap CI and n; a group under the minimum size is reported as too small, never as a number. Per attribute: "
    "the worst eligible group, and the gap between the best and the worst group with a paired-bootstrap 95% CI "
    "(both groups' values from the same resamples) and its p-value Holm-adjusted across the attributes; "
    "a p-value followed by an asterisk is significant at alpha = {alpha:g}. Samples whose attribute is unknown are "
    "left out of that attribute."
)


@dataclass(frozen=True)
class Shown:
    """A configuration the forest plots show: its label, colour, cell and whole-test-set value."""

    label: str
    color: tuple[float, ...] | str
    cell_id: str
    overall: float


def _overall_value(d: DatasetContext, cell_id: str) -> float:
    mine = d.rows[(d.rows["cell_id"] == cell_id) & (d.rows["metric"] == d.view.metric)]
    return _finite(mine["value"].iloc[-1]) if len(mine) else math.nan


def shown_configurations(d: DatasetContext) -> list[Shown]:
    """The recommended configuration (:mod:`fmprobe.report.recommend`) and the baseline's configuration chosen on
    validation (the main table's †), once when they are the same cell."""
    colors, baseline = d.report.figures.colors, d.report.headline.baseline
    answer = next((a for a in d.report.recommendation.datasets if a.dataset == d.view.name), None)
    out: list[Shown] = []
    if answer is not None and answer.chosen is not None and answer.chosen.cell_id:
        c = answer.chosen
        role = "recommended (also the baseline)" if c.model == baseline else "recommended"
        out.append(Shown(f"{role}: {c.label(full=True)}", colors.get(c.model, "#1f77b4"), c.cell_id,
                         _overall_value(d, c.cell_id)))  # fmt: skip
    base = d.chosen.get(baseline)
    if base is not None and all(s.cell_id != base.first["cell_id"] for s in out):
        cid = str(base.first["cell_id"])
        label = f"baseline: {base.model} ({base.readout}, {base.resolution} px) + {base.probe}"
        out.append(Shown(label, colors.get(base.model, "#7f7f7f"), cid, _overall_value(d, cid)))
    return out


def _value_cell(value: float, low: float, high: float, mark: str = "") -> Cell:
    """``0.912 [0.871, 0.948]`` (the CI as the cell's unbolded tail), or a dash when there is no value."""
    if not math.isfinite(value):
        return Cell(MISSING)
    ci = f" [{low:.3f}, {high:.3f}]" if math.isfinite(low) and math.isfinite(high) else ""
    return Cell(f"{value:.3f}", mark=mark, tail=ci)


def _group_cell(g: GroupValue | None) -> Cell:
    if g is None:
        return Cell("")
    return _value_cell(g.value, g.ci_low, g.ci_high) if math.isfinite(g.value) else Cell(g.short())


def groups_table(d: DatasetContext, shown: Sequence[Shown], attrs: Sequence[str]) -> Table:
    """Every group's value [CI] of the shown configurations: the numbers behind the forest plots."""
    df, metric = d.report.df, d.view.metric
    values = [group_values(df, s.cell_id, metric) for s in shown]
    body = []
    for attribute in attrs:
        groups = dict.fromkeys(g.group for v in values for g in v.get(attribute, []))
        for group in groups:
            found = [next((g for g in v.get(attribute, []) if g.group == group), None) for v in values]
            n = next(g.n for g in found if g is not None)
            body.append([Cell(attribute), Cell(group), Cell(str(n)), *map(_group_cell, found)])
    caption = (
        f"{metric} per subgroup of the test set (95% bootstrap CI), lowest repeat: "
        + "; ".join(f"{s.label}" for s in shown) + "."
    )
    return Table(["attribute", "group", "n", *[s.label.split(":", 1)[0] for s in shown]], body, caption,
                 name="subgroups_groups")  # fmt: skip


def _note(notes: dict[str, int], text: str) -> int | None:
    return notes.setdefault(text, len(notes) + 1) if text else None


def _value_of(attribute: str, label: str) -> str:
    """``60–80`` of ``age_band=60–80`` (the table's attribute column says the rest)."""
    return label.removeprefix(f"{attribute}=")


def _summary_cells(s: AttributeSummary | None, alpha: float, notes: dict[str, int]) -> list[Cell]:
    """worst group, worst value [CI], gap [CI], best group, Holm p (marked when significant)."""
    if s is None:
        return [Cell(MISSING, note=_note(notes, "no subgroup summary rows recorded for this cell and attribute"))]
    worst = _value_cell(s.worst, s.worst_low, s.worst_high)
    groups = Cell(_value_of(s.attribute, s.worst_group)), Cell(_value_of(s.attribute, s.best_group))
    if not math.isfinite(s.gap):
        gap = Cell(MISSING, note=_note(notes, f"{s.attribute}: {s.reason or 'no gap recorded'}"))
        return [groups[0], worst, gap, groups[1], Cell("")]
    mark = SIGNIFICANT_MARK if s.significant(alpha) else ""
    p = Cell(_p_text(s.p_holm), mark=mark) if math.isfinite(s.p_holm) else Cell(MISSING)
    return [groups[0], worst, _value_cell(s.gap, s.gap_low, s.gap_high), groups[1], p]


def _p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _gap_text(s: AttributeSummary | None) -> str:
    """``gap 0.070 [0.030, 0.110], Holm p 0.003``: what a forest plot's legend says of the attribute's gap."""
    if s is None or not math.isfinite(s.gap):
        return ""
    ci = f" [{s.gap_low:.3f}, {s.gap_high:.3f}]" if math.isfinite(s.gap_low) and math.isfinite(s.gap_high) else ""
    return f"gap {s.gap:.3f}{ci}" + (f", Holm p {_p_text(s.p_holm)}" if math.isfinite(s.p_holm) else "")


def worst_gap_table(d: DatasetContext, attrs: Sequence[str]) -> Table:
    """Per backbone (its configuration chosen on validation, lowest repeat) and attribute: the whole test set, the
    worst group and the gap between best and worst group with its Holm p."""
    df, metric, alpha = d.report.df, d.view.metric, d.report.alpha
    notes: dict[str, int] = {}
    body = []
    for model, c in sorted(d.chosen.items()):
        cid = str(c.first["cell_id"])
        found = summaries(df, cid, metric)
        overall = _overall_value(d, cid)
        for attribute in attrs:
            s = found.get(attribute)
            cells = _summary_cells(s, alpha, notes)
            cells += [Cell("")] * (5 - len(cells))
            body.append([Cell(f"{model} + {c.probe}"), Cell(attribute, note=_note(notes, s.notes if s else "")),
                         Cell(f"{overall:.3f}" if math.isfinite(overall) else MISSING), *cells])  # fmt: skip
    configs = "; ".join(f"{model}: {c.describe()}" for model, c in sorted(d.chosen.items()))
    caption = (
        f"{metric} of each backbone's configuration chosen on validation ({configs}; lowest repeat): whole test set, "
        "worst subgroup (95% bootstrap CI) and the gap between the best and the worst group (95% paired-bootstrap "
        f"CI); p: Holm-adjusted across attributes, followed by an asterisk when significant at alpha = {alpha:g}."
    )
    header = ["backbone", "attribute", "whole test set", "worst group", "worst", "gap (best − worst)", "best group",
              "p (Holm)"]  # fmt: skip
    return Table(header, body, caption, {n: t for t, n in notes.items()}, name="subgroups_worst_gap")


def subgroup_blocks(d: DatasetContext) -> list[Block]:
    """Per dataset with subgroup rows: a note, a forest plot per attribute (recommended configuration and the
    baseline's), the group values behind them, and worst group and gap per backbone; [] without subgroup rows."""
    df = d.report.df
    if not has_subgroups(df) or not has_subgroups(df[df["dataset"] == d.view.name]):
        return []
    shown = shown_configurations(d)
    cells = [s.cell_id for s in shown] + [str(c.first["cell_id"]) for c in d.chosen.values()]
    attrs = attributes(df, cells, d.view.metric)
    if not attrs:
        return []
    figures = d.report.figures
    blocks: list[Block] = [
        Heading("Subgroups", 3),
        Para(SUBGROUP_NOTE.format(alpha=d.report.alpha)),
    ]
    for attribute in attrs:
        series = [Series(s.label, s.color, group_values(df, s.cell_id, d.view.metric).get(attribute, []), s.overall,
                         _gap_text(summaries(df, s.cell_id, d.view.metric).get(attribute))) for s in shown]  # fmt: skip
        if not any(s.groups for s in series):
            continue
        path = figures.file(f"subgroups_{slug(d.view.name)}_{slug(attribute)}.png")
        title = f"{d.view.name}: {d.view.metric} by {attribute}"
        blocks.append(figures.image(forest_chart(title, d.view.metric, attribute, series, path),
                                    f"forest plot {d.view.name} {attribute}"))  # fmt: skip
    if shown:
        blocks.append(groups_table(d, shown, attrs))
    return blocks + [worst_gap_table(d, attrs)]

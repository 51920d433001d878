"""Assemble the report (Markdown, self-contained HTML, PNGs) and the terminal table from a results table."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fmprobe._io import accepts_renamed, atomic_write_text, slug
from fmprobe.errors import ResultsError
from fmprobe.report import plots
from fmprobe.report.analysis import (
    Axis,
    Choice,
    Confusion,
    DatasetView,
    Headline,
    choose_on_val,
    confusion,
    dataset_views,
    efficiency_curves,
    headline,
    higher_is_better,
    model_label,
    suggest,
)
from fmprobe.report.calibration import calibration_blocks
from fmprobe.report.cost import cost_blocks
from fmprobe.report.critical_difference import cd_blocks
from fmprobe.report.curves import curve_blocks
from fmprobe.report.doc import (
    MISSING,
    Block,
    Cell,
    Heading,
    Image,
    Para,
    Table,
    table_names,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
    to_text,
)
from fmprobe.report.embedding import embedding_blocks
from fmprobe.report.options import ALLOW_DIFFERENT_TEST_SETS, ALPHA, N_RESAMPLES, REPORT_RENAMED, SEED
from fmprobe.report.provenance import feature_file_table, report_provenance
from fmprobe.report.recommend import Recommendation, recommend
from fmprobe.report.reference import ReferenceRow, read_reference, reference_table
from fmprobe.report.subgroups import subgroup_blocks
from fmprobe.report.tables_metrics import all_metrics_blocks, per_class_blocks
from fmprobe.results import check_writable, disqualifying, overall, read_results, to_frame, validate, writing_into

VAL_NOTE = (
    "All hyper-parameters — probe, probe settings, readout and resolution — were chosen on validation "
    "data (`val_score`, mean over repeats); the test set was used only to report the numbers."
)


EFFICIENCY_NOTE = (
    "Per backbone, the configuration selected on validation at each train fraction; line = mean over repeats, "
    "error bars = sd over repeats, band = mean ± 1.96·sqrt(between-repeat variance + mean within-repeat bootstrap "
    "variance): the spread over repeats (training subsample and seed) plus the test set's bootstrap variance (each "
    "repeat's sd read from its 95% CI width / 3.92), i.e. where one rerun of the protocol would land. "
)
SHOTS_NOTE = (
    "The few-shot panel (log2 axis) fits on k labelled training images per class, one per patient or lesion where "
    "the training split records groups, each k drawn once per repeat; few-shot rows are on this axis only, never "
    "in a train-fraction table."
)


@dataclass(frozen=True)
class ReportContext:
    """What every report section reads: all result rows, the per-dataset views, the headline, the figures and
    the paired bootstrap's settings."""

    df: pd.DataFrame
    views: list[DatasetView]
    headline: Headline
    figures: Figures
    n_bootstrap: int
    seed: int
    alpha: float = ALPHA
    reference: tuple[ReferenceRow, ...] = ()  # published numbers (--reference), shown, never compared

    @functools.cached_property
    def recommendation(self) -> Recommendation:
        """The recommendation (:func:`recommend`), computed once for every section that reads it."""
        return recommend(
            self.df, alpha=self.alpha, baseline=self.headline.baseline, n_bootstrap=self.n_bootstrap, seed=self.seed,
            allow_different_test_sets=any(v.mixed_test_sets for v in self.views),
        )  # fmt: skip


@dataclass(frozen=True)
class DatasetContext:
    """What a per-dataset section reads: the report's context, the dataset's view, each model's configuration
    chosen on validation, and every whole-test-set row of the dataset (all metrics; subgroup rows are in
    ``report.df``)."""

    report: ReportContext
    view: DatasetView
    chosen: dict[str, Choice]
    rows: pd.DataFrame


@dataclass(frozen=True)
class ReportPaths:
    out_dir: Path
    markdown: Path
    html: Path
    plots: tuple[Path, ...]
    tables: tuple[Path, ...] = ()  # tables/<name>.csv and tables/<name>.tex, a pair per table of the report


# ------------------------------------------------------------------------------------------------ formatting


def _num(x: float) -> str:
    return f"{x:.3f}"


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _span(values: pd.Series) -> str:
    u = sorted(set(int(v) for v in values))
    return str(u[0]) if len(u) == 1 else f"{u[0]}–{u[-1]}"


class _Notes:
    """Footnotes of one table, one number per distinct reason."""

    def __init__(self) -> None:
        self.by_text: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        return self.by_text.setdefault(text, len(self.by_text) + 1)

    @property
    def footnotes(self) -> dict[int, str]:
        return {n: t for t, n in self.by_text.items()}


def _mark_best(cells: dict[tuple[int, int], Cell], scores: dict[tuple[int, int], float], better_high: bool) -> None:
    """Bold the best score of each column with more than one score (ties at the displayed precision all count)."""
    for col in {c for _, c in scores}:
        col_scores = {k: round(v, 3) for k, v in scores.items() if k[1] == col and math.isfinite(v)}
        if len(col_scores) < 2:  # one candidate is best of nothing
            continue
        best = max(col_scores.values()) if better_high else min(col_scores.values())
        for k, v in col_scores.items():
            if v == best:
                cells[k] = dataclasses.replace(cells[k], bold=True)


# ------------------------------------------------------------------------------------------------ tables


def _row_labels(rows: pd.DataFrame) -> list[tuple[tuple[str, str, int], str]]:
    """(model, readout, resolution) keys in display order, labelled with readout/resolution only where they vary."""
    keys = sorted({(m, r, int(s)) for m, r, s in zip(rows["model"], rows["readout"], rows["resolution"], strict=True)})
    vary_readout = len({k[1] for k in keys}) > 1
    vary_res = len({k[2] for k in keys}) > 1
    out = []
    for m, r, s in keys:
        label = m + (f" · {r}" if vary_readout else "") + (f" @{s}" if vary_res else "")
        out.append(((m, r, s), label))
    return out


def dataset_tables(view: DatasetView, chosen: dict[str, Choice]) -> list[Table]:
    """Backbone x probe table at the table fraction (value [95% CI]), plus mean ± sd when repeats > 1."""
    rows = view.at(view.table_fraction)
    probes = sorted(rows["probe"].unique())
    labels = _row_labels(rows)
    high = higher_is_better(view.metric)
    selected = {(c.model, c.readout, c.resolution, c.probe) for c in chosen.values()}
    n_rep = int(rows.groupby(["model", "readout", "resolution", "probe"])["repeat"].nunique().max())
    frac = f"train fraction {view.table_fraction}"
    frac += (
        " (full training set)" if math.isclose(view.table_fraction, 1.0) else " (the largest run; no full-data rows)"
    )
    tables = []
    for kind in ["ci", "mean"] if n_rep > 1 else ["ci"]:
        notes = _Notes()
        cells: dict[tuple[int, int], Cell] = {}
        scores: dict[tuple[int, int], float] = {}
        for i, ((m, r, s), _label) in enumerate(labels):
            for j, probe in enumerate(probes):
                sub = rows[
                    (rows["model"] == m) & (rows["readout"] == r) & (rows["resolution"] == s) & (rows["probe"] == probe)
                ].sort_values("repeat")
                mark = "†" if (m, r, s, probe) in selected else ""
                if sub.empty:
                    cells[i, j] = Cell("", mark=mark)
                    continue
                cells[i, j], scores[i, j] = (_ci_cell if kind == "ci" else _mean_cell)(sub, mark, notes)
                cells[i, j] = _flagged(cells[i, j], sub, notes)
                if any(disqualifying(f) for f in sub["flags"]):  # a degenerate probe is never "best"
                    del scores[i, j]
        _mark_best(cells, scores, high)
        body = [[Cell(label)] + [cells[i, j] for j in range(len(probes))] for i, (_, label) in enumerate(labels)]
        n_test = _span(rows["n_test"])
        best = "**Bold**: best unflagged value in column. " if len(labels) > 1 else ""  # one backbone: no best
        if kind == "ci":
            rep = int(rows["repeat"].min())
            caption = (
                f"{view.metric} on the test set (n = {n_test}"
                f"{''.join(f'; {d}' for d in sorted(set(rows['detail']) - {''}))}), {frac}"
                f"{f', repeat {rep}' if n_rep > 1 else ''}; 95% bootstrap CI in brackets. "
                f"{best}†: configuration selected on validation for that backbone."
            )
        else:
            caption = (
                f"{view.metric}, mean ± sd over {n_rep} repeats, {frac}. {best}†: selected on validation."
            )
        if any(FLAG_MARK in c.mark for c in cells.values()):
            caption += f" {FLAG_MARK}: a warning on that cell (footnote), e.g. a degenerate probe."
        name = view.metric if kind == "ci" else f"{view.metric}_mean-over-repeats"
        tables.append(Table(["backbone"] + probes, body, caption, notes.footnotes, name=name))
    return tables


FLAG_MARK = "‡"


def _flagged(cell: Cell, sub: pd.DataFrame, notes: _Notes) -> Cell:
    """A cell whose rows carry warnings (``flags``, e.g. constant test predictions) gets ‡ and them as footnote."""
    flags = sorted({str(f) for f in sub["flags"] if isinstance(f, str) and f}) if "flags" in sub else []
    if not flags:
        return cell
    note = notes("; ".join(flags)) if cell.note is None else cell.note
    return dataclasses.replace(cell, mark=cell.mark + FLAG_MARK, note=note)


def _ci_cell(sub: pd.DataFrame, mark: str, notes: _Notes) -> tuple[Cell, float]:
    r = sub.iloc[0]
    if pd.isna(r["value"]):
        return Cell(MISSING, mark=mark, note=notes(f"{r['metric']} missing: {r['missing_reason']}")), math.nan
    ci = f" [{_num(r['ci_low'])}, {_num(r['ci_high'])}]" if pd.notna(r["ci_low"]) and pd.notna(r["ci_high"]) else ""
    return Cell(_num(r["value"]), mark=mark, tail=ci), float(r["value"])


def _mean_cell(sub: pd.DataFrame, mark: str, notes: _Notes) -> tuple[Cell, float]:
    """Mean ± sd over repeats; missing in any repeat means no number (a mean over fewer repeats would mislead)."""
    missing = sub[sub["value"].isna()]
    if not missing.empty:
        reason = missing["missing_reason"].iloc[0]
        what = "" if len(missing) == len(sub) else f" in {len(missing)} of {len(sub)} repeats"
        return Cell(MISSING, mark=mark, note=notes(f"{sub['metric'].iloc[0]} missing{what}: {reason}")), math.nan
    vals = sub["value"]
    tail = f" ± {_num(float(vals.std(ddof=1)))}" if len(vals) > 1 else ""
    return Cell(_num(float(vals.mean())), mark=mark, tail=tail), float(vals.mean())


def _gain_summary(h: Headline, datasets: list[str]) -> Table:
    """Backbone x dataset relative gains over the baseline, plus their mean; a missing gain says why."""
    notes = _Notes()
    gains = {(g.dataset, g.model): g for g in h.gains}
    means = {mg.model: mg for mg in h.means}
    body = []
    for m in h.models:
        row = [Cell(m)]
        for d in datasets:
            g = gains.get((d, m))
            if g is None:  # the model was not run on this dataset: nothing to compare, said so
                row.append(Cell("n/a", note=notes(f"{m} on {d}: `{m}` was not run on this dataset")))
            elif g.reason:
                row.append(Cell(MISSING, note=notes(f"{m} on {d}: {g.reason}")))
            else:
                subset = notes(f"{m} on {d}: {g.subset}") if g.subset else None  # a pairing on shared test ids only
                row.append(Cell(f"{_pct(g.rel)} [{_pct(g.rel_low)}, {_pct(g.rel_high)}]", note=subset))
        mg = means.get(m)
        if len(datasets) < 2:  # one dataset: its mean is its own column again
            pass
        elif mg is None:
            row.append(Cell(MISSING, note=notes(f"{m}: no dataset with a paired comparison")))
        else:
            n = f" (n={len(mg.datasets)})" if len(mg.datasets) != len(datasets) else ""
            row.append(Cell(f"{_pct(mg.rel)} [{_pct(mg.low)}, {_pct(mg.high)}]{n}"))
        body.append(row)
    caption = f"Relative gain of the primary metric over `{h.baseline}`, with 95% paired-bootstrap CI."
    header = ["backbone", *datasets] + (["mean over datasets"] if len(datasets) > 1 else [])
    return Table(header, body, caption, notes.footnotes, name="gains")


def _gain_detail(h: Headline, views: list[DatasetView]) -> Table | None:
    """The configurations behind the gains, the baseline's first on each dataset; None when there is no gain."""
    rows = []
    for v in views:
        ok = [g for g in h.gains if g.dataset == v.name and not g.reason]
        if not ok:
            continue
        base = ok[0].base_choice
        rows.append(
            [v.name, f"{h.baseline} (baseline)", _cfg(base, v), _num(base.val_score), _num(ok[0].base_value), "", ""]
        )
        rows += [[v.name, g.model, _cfg(g.choice, v), _num(g.choice.val_score), _num(g.value), f"{g.diff:+.3f}",
                  _p(g.p_value)] for g in ok]  # fmt: skip
    if not rows:
        return None
    return Table(
        ["dataset", "backbone", "selected on val", "val", "test", "Δ test", "p"],
        [[Cell(text) for text in row] for row in rows],
        "The configurations behind the gains: primary metric on validation (mean over repeats) and test "
        "(the compared repeat), difference to the baseline and two-sided paired-bootstrap p-value.",
        name="gain_detail",
    )


def _headline_tables(h: Headline, views: list[DatasetView]) -> list[Table]:
    detail = _gain_detail(h, views)
    return [_gain_summary(h, [v.name for v in views])] + ([detail] if detail else [])


def _cfg(c: Choice, v: DatasetView) -> str:
    """The probe, plus readout/resolution when the dataset's rows vary in them."""
    parts = [c.probe]
    if v.rows["readout"].nunique() > 1:
        parts.append(c.readout)
    if v.rows["resolution"].nunique() > 1:
        parts.append(f"@{c.resolution}")
    return " · ".join(parts)


# ------------------------------------------------------------------------------------------------ sections


def _load(results: pd.DataFrame | str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> pd.DataFrame:
    if isinstance(results, pd.DataFrame):
        return validate(to_frame(results))  # to_frame: text made printable (HTML and PNG take valid text only)
    return read_results(results)


def _view(views: list[DatasetView], dataset: str) -> DatasetView:
    names = [v.name for v in views]
    if dataset not in names:
        raise ResultsError(
            f"no dataset {dataset!r} in these results. {suggest(dataset, names)}Datasets: {', '.join(names)}."
        )
    return views[names.index(dataset)]


def format_table(
    df: pd.DataFrame | str | os.PathLike[str], dataset: str, *, allow_different_test_sets: bool = ALLOW_DIFFERENT_TEST_SETS
) -> str:
    """The per-dataset backbone x probe table as aligned plain text (``*`` = best in column).

    What ``fmprobe probe`` and the demo print at the end; each probe's configuration is chosen on validation,
    the numbers are test scores.

    Parameters
    ----------
    df : pandas.DataFrame or path
        A results DataFrame, or a results directory or file (:func:`fmprobe.results.read_results`).
    dataset : str
        The dataset's name as in the results' ``dataset`` column.
    allow_different_test_sets : bool, optional
        Compare rows scored on different test sets on the test ids they share (refused by default).

    Returns
    -------
    str
        The table(s), blank-line separated.

    Raises
    ------
    fmprobe.errors.ResultsError
        The results cannot be read, do not hold ``dataset``, or mix test sets without ``allow_different_test_sets``.

    Examples
    --------
    >>> from fmprobe import format_table
    >>> print(format_table("runs/results", "demo-v2-150x4-seed0"))  # doctest: +SKIP
    """
    view = _view(dataset_views(_load(df), allow_different_test_sets), dataset)
    chosen = choose_on_val(view.at(view.table_fraction), view.metric)
    return "\n\n".join(to_text(t) for t in dataset_tables(view, chosen))


def provenance_blocks(ctx: ReportContext) -> list[Block]:
    df, views = ctx.df, ctx.views
    overview = []
    for v in views:
        full = v.at(v.table_fraction)
        overview.append(
            [
                Cell(v.name),
                Cell(v.task),
                Cell(v.metric),
                Cell(_span(v.rows["n_test"])),
                Cell(_span(full["n_train"])),
                Cell(
                    ", ".join(f"{f:g}" for f in v.fractions)
                    + (f"; shots {', '.join(map(str, v.shots))}" if v.shots else "")
                ),
                Cell(str(v.rows["repeat"].nunique())),
                Cell(str(v.rows["cell_id"].nunique())),
            ]
        )
    fp = (
        df.assign(model=[model_label(b, w) for b, w in zip(df["backbone"], df["weights"], strict=True)])
        .groupby(["dataset", "model", "resolution"])["fingerprint"]
        .unique()
        .reset_index()
    )
    fp_rows = [
        [Cell(r.dataset), Cell(r.model), Cell(str(r.resolution)), Cell(", ".join(sorted(r.fingerprint)))]
        for r in fp.itertuples()
    ]
    return [
        Heading("Provenance"),
        Para(report_provenance()),
        Table(
            ["dataset", "task", "primary metric", "n test", "n train (full)", "train fractions", "repeats", "cells"],
            overview,
            name="datasets",
        ),
        Table(
            ["dataset", "backbone", "resolution", "feature-cache fingerprint"],
            fp_rows,
            "Fingerprints identify the exact cached features (backbone, weights, preprocessing, data).",
            name="fingerprints",
        ),
        *feature_file_table(df),
    ]


class Figures:
    """The report's plots (PNG + SVG): where they go, the model colours they share, and the list written so far."""

    def __init__(self, out: Path, colors: dict[str, tuple[float, ...]]) -> None:
        self.out, self.dir, self.colors = out, out / "plots", colors
        self.paths: list[Path] = []

    def file(self, name: str) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / name

    def image(self, path: Path, alt: str) -> Image:
        """The PNG's block, the SVG beside it (:func:`plots.vector_of`) listed with it; both in :attr:`paths`."""
        svg = plots.vector_of(path)
        self.paths += [path, svg] if svg.exists() else [path]
        rel = svg.relative_to(self.out).as_posix() if svg.exists() else ""
        return Image(path, path.relative_to(self.out).as_posix(), alt, rel, plots.display_width(path))


@accepts_renamed(REPORT_RENAMED)
def write_report(
    results: pd.DataFrame | str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    baseline: str | None = None,
    *,
    n_bootstrap: int = N_RESAMPLES,
    seed: int = SEED,
    allow_different_test_sets: bool = ALLOW_DIFFERENT_TEST_SETS,
    alpha: float = ALPHA,
    reference: str | os.PathLike[str] | None = None,
) -> ReportPaths:
    """Write the report of a results table: report.md, a self-contained report.html, the PNG plots and every table
    as CSV and LaTeX (under ``tables/``) into ``out_dir`` (each file atomically, ``fmprobe report``).

    Parameters
    ----------
    results : pandas.DataFrame or path or sequence of paths
        A results DataFrame (predictions paths absolute or relative to the working directory) or anything
        :func:`fmprobe.results.read_results` accepts.
    out_dir : str or path
        The report folder (created; checked writable before the bootstrap runs).
    baseline : str or None, optional
        The model gains are measured against; None picks the ImageNet model (or the first alphabetically) and
        the report says so.
    n_bootstrap, seed : int, optional
        The paired bootstrap's resamples per comparison and its seed (:class:`ReportOptions`).
    allow_different_test_sets : bool, optional
        Rows of one dataset scored on different test sets are refused unless set (then compared on the test ids
        they share, said in the report).
    alpha : float, optional
        The recommendation's significance level.
    reference : str or path or None, optional
        A CSV of published numbers (dataset, method, metric, value, source) shown beside ours, marked as not
        measured here (:mod:`fmprobe.report.reference`).

    Returns
    -------
    ReportPaths
        ``out_dir``, ``markdown``, ``html``, ``plots`` and ``tables`` (the paths written).

    Raises
    ------
    fmprobe.errors.ResultsError
        The table is empty or breaks the schema, ``baseline`` is not a model in it, ``out_dir`` cannot be
        written, or test sets differ.

    Examples
    --------
    >>> from fmprobe import write_report
    >>> paths = write_report("runs/results", "runs/report", n_bootstrap=200)  # doctest: +SKIP
    >>> paths.html  # doctest: +SKIP
    PosixPath('runs/report/report.html')
    """
    df = _load(results)
    if df.empty:
        raise ResultsError("the results table is empty; run a study first.")
    published = read_reference(reference, sorted(df["dataset"].unique())) if reference is not None else ()
    out = check_writable(out_dir, "report folder")  # before the bootstrap, whose work a read-only folder would lose
    with writing_into(out, "report folder"):  # a full disk mid-way: a named error, no partial file (atomic writes)
        views = dataset_views(df, allow_different_test_sets)
        h = headline(views, baseline, n_bootstrap, seed)
        figures = Figures(out, plots.model_colors([h.baseline] + h.models))
        ctx = ReportContext(df, views, h, figures, n_bootstrap, seed, alpha, published)
        blocks = [block for section in REPORT_SECTIONS for block in section(ctx)]
        listing, tables = _export_tables(blocks, out)
        md_path, html_path = out / "report.md", out / "report.html"
        atomic_write_text(md_path, to_markdown(blocks + listing))
        atomic_write_text(html_path, to_html(blocks + listing, "fmprobe report"))
    return ReportPaths(out, md_path, html_path, tuple(figures.paths), tables)


def _export_tables(blocks: list[Block], out: Path) -> tuple[list[Block], tuple[Path, ...]]:
    """Every table of the report as ``tables/<name>.csv`` and ``.tex`` (booktabs), and the section listing them."""
    named = table_names(blocks)
    if not named:
        return [], ()
    folder = out / "tables"
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    rows = []
    for name, where, table in named:
        csv_path, tex_path = folder / f"{name}.csv", folder / f"{name}.tex"
        atomic_write_text(csv_path, to_csv(table))
        atomic_write_text(tex_path, to_latex(table))
        paths += [csv_path, tex_path]
        rows.append([Cell(where), Cell(f"tables/{name}.csv"), Cell(f"tables/{name}.tex")])
    listing: list[Block] = [
        Heading("Tables as CSV and LaTeX"),
        Para(
            "Every table above is also written as CSV (cells as shown, e.g. `0.845 [0.769, 0.911]`) and as LaTeX "
            "(booktabs: needs `\\usepackage{booktabs}`; bold = best, footnotes under the rule) next to this report."
        ),
        Table(["table", "CSV", "LaTeX"], rows),
    ]
    return listing, tuple(paths)


def title_blocks(ctx: ReportContext) -> list[Block]:
    """Title and what was run."""
    names = [v.name for v in ctx.views]
    return [
        Heading("fmprobe report", 1),
        Para(
            f"{len(names)} dataset(s): {', '.join(f'`{n}`' for n in names)}. "
            f"{len(ctx.headline.models) + 1} backbone(s), {ctx.df['probe'].nunique()} probe(s), "
            f"{ctx.df['cell_id'].nunique()} evaluated cells. Frozen-backbone embeddings, probes fitted on the "
            "training split. " + VAL_NOTE
        ),
    ]


def recommendation_blocks(ctx: ReportContext) -> list[Block]:
    """The answer first: what to use per dataset, with the comparisons behind it (:mod:`fmprobe.report.recommend`)."""
    names = iter([d.dataset for d in ctx.recommendation.datasets if d.chosen is not None])  # one table each, in order
    return [dataclasses.replace(b, name=next(names, "")) if isinstance(b, Table) else b for b in ctx.recommendation.blocks()]


MEAN_NOTE = (
    " The mean over datasets combines the per-dataset bootstrap replicates: datasets are independent test sets, so "
    "the b-th replicate of the mean is the mean of every dataset's b-th replicate, and its CI is the 2.5–97.5 "
    "percentile of those means."
)


def headline_blocks(ctx: ReportContext) -> list[Block]:
    """The gain of each backbone over the baseline, per dataset and averaged (tables and chart)."""
    h, views, figures = ctx.headline, ctx.views, ctx.figures
    if not h.models:  # one backbone: a gain table would be a header with no row
        return [
            Heading("Headline: gain over the baseline"),
            Para(
                f"Nothing to compare: only one backbone (`{h.baseline}`) was run, so there is no gain over a "
                "baseline to show. Add a second backbone (e.g. an ImageNet one, or the `:random` control) to the run."
            ),
        ]
    blocks: list[Block] = [
        Heading("Headline: gain over the baseline"),
        Para(h.baseline_note),
        *[Para(f"**Different test sets** in `{v.name}`: {v.mixed_test_sets}") for v in views if v.mixed_test_sets],
        Para(
            "For each dataset and backbone the configuration with the best validation score is compared with the "
            "baseline's, on the same test samples (matched by sample id), by a paired, class-stratified bootstrap "
            f"({ctx.n_bootstrap} resamples, seed {ctx.seed}): relative gain = (metric − baseline metric) / baseline "
            "metric." + (MEAN_NOTE if len(views) > 1 else "")
        ),
        *_headline_tables(h, views),
    ]
    if h.means or any(not g.reason for g in h.gains):
        chart = plots.gain_chart(h, [v.name for v in views], figures.colors, figures.file("gain.png"))
        blocks.append(figures.image(chart, "gain over baseline"))
    return blocks


def per_label_table(df: pd.DataFrame, chosen: dict[str, Choice]) -> list[Block]:
    """Multilabel datasets: ROC-AUC per label (and per named label set) of each backbone's configuration selected on
    validation, value [95% CI] or "n/a (reason)"; the rows are the ``roc_auc[...]`` rows of the chosen cells."""
    cells = {model: c.first["cell_id"] for model, c in sorted(chosen.items())}
    rows = df[df["cell_id"].isin(list(cells.values())) & df["metric"].str.match(r"roc_auc\[.+\]$")]
    if rows.empty:
        return []
    columns = list(dict.fromkeys(rows["metric"]))
    sets = set(rows.loc[rows["detail"].str.contains(r"\b\d+ of \d+ labels\b", regex=True), "metric"])
    header = ["backbone"] + [m[len("roc_auc[") : -1] + (" (mean)" if m in sets else "") for m in columns]
    body = []
    for model, cell in cells.items():
        mine = rows[rows["cell_id"] == cell].drop_duplicates("metric", keep="last").set_index("metric")
        line = [Cell(model)]
        for m in columns:
            r = mine.loc[m] if m in mine.index else None
            if r is None:
                line.append(Cell(""))
            elif pd.isna(r["value"]):
                line.append(Cell(f"n/a ({str(r['missing_reason']).removeprefix('ROC-AUC is undefined: ')})"))
            else:
                ci = f" [{_num(r['ci_low'])}, {_num(r['ci_high'])}]" if pd.notna(r["ci_low"]) else ""
                line.append(Cell(_num(r["value"]), tail=ci))
        body.append(line)
    details = "; ".join(sorted({f"{m[len('roc_auc[') : -1]}: {d}" for m, d in zip(rows["metric"], rows["detail"])
                                if m in sets and d}))  # fmt: skip
    caption = (
        "ROC-AUC per label on the test set, for each backbone's configuration selected on validation (lowest repeat); "
        "95% bootstrap CI in brackets (test rows resampled whole, stratified on labels with under 10 positives or "
        "negatives, so the label set is the same on every resample); n/a: the label has "
        f"no positive or no negative among its known test entries.{f' Label sets: {details}.' if details else ''}"
    )
    return [Heading("Per label", 3), Table(header, body, caption)]


def dataset_header(d: DatasetContext) -> list[Block]:
    v = d.view
    blocks: list[Block] = [Heading(f"Dataset `{v.name}`"), Para(f"Task: {v.task}; primary metric: `{v.metric}`.")]
    return blocks + ([Para(f"**Different test sets.** {v.mixed_test_sets}")] if v.mixed_test_sets else [])


def dataset_table_blocks(d: DatasetContext) -> list[Block]:
    return list(dataset_tables(d.view, d.chosen))


def reference_blocks(d: DatasetContext) -> list[Block]:
    """Published numbers for this dataset (``--reference``), beside ours, marked as not measured here."""
    return reference_table(d.report.reference, d.rows, d.view)


def per_label_blocks(d: DatasetContext) -> list[Block]:
    return per_label_table(d.rows, d.chosen) if d.view.task == "multilabel" else []


def efficiency_blocks(d: DatasetContext) -> list[Block]:
    """Data-efficiency curves when several train fractions or shot counts were run."""
    v, figures = d.view, d.report.figures
    panels = {
        Axis.fraction: efficiency_curves(v) if len(v.fractions) > 1 else {},
        Axis.shots: efficiency_curves(v, Axis.shots) if v.shots else {},
    }
    if not any(panels.values()):
        return []
    path = figures.file(f"efficiency_{slug(v.name)}.png")
    chart = plots.efficiency_chart(v.name, v.metric, panels, figures.colors, d.report.headline.baseline, path)
    return [
        Heading("Data efficiency", 3),
        Para(EFFICIENCY_NOTE + (SHOTS_NOTE if panels[Axis.shots] else "")),
        figures.image(chart, f"data efficiency {v.name}"),
    ]


def dataset_blocks(ctx: ReportContext) -> list[Block]:
    """Every dataset's section: :data:`DATASET_SECTIONS` in order, per dataset."""
    blocks: list[Block] = []
    for v in ctx.views:
        rows = overall(ctx.df[ctx.df["dataset"] == v.name])  # subgroup rows: the subgroup section reads ctx.df
        d = DatasetContext(ctx, v, choose_on_val(v.at(v.table_fraction), v.metric), rows)
        blocks += [block for section in DATASET_SECTIONS for block in section(d)]
    return blocks


def _recalls(c: Confusion) -> str:
    return ", ".join(f"{name} {_num(r)}" for name, r in zip(c.classes, c.recalls(), strict=True))


def _rule_sentence(c: Confusion, argmax: Confusion | None) -> str:
    """What decision rule the matrix shows; binary: each class's recall at it (sensitivity and specificity), and at
    the argmax to compare."""
    if c.counts.shape[0] != 2:
        return "Predicted class: the argmax of the scores (an ordinal cell: its decoded grade)."
    if c.threshold is None:
        text = f"Predicted class: the argmax of the scores ({c.note or 'no validation threshold'})"
    else:
        text = (
            f"Predicted {c.classes[1]} when its score ≥ {c.threshold:.3f}, the threshold chosen on validation by "
            "Youden's J (sensitivity + specificity − 1)"
        )
    text += f". Recall per class at this rule (sensitivity and specificity; test): {_recalls(c)}."
    return text + (f" At the argmax (score ≥ 0.5): {_recalls(argmax)}." if argmax is not None else "")


def confusion_blocks(d: DatasetContext) -> list[Block]:
    """The best configuration's test confusion matrix: binary at the Youden threshold chosen on validation (when
    recorded), else at the argmax; the sentence says which."""
    v, figures = d.view, d.report.figures
    head = Heading("Confusion matrix", 3)
    if v.task == "multilabel":
        return []
    best = choose_on_val(v.at(v.table_fraction), v.metric, by=None).get("")
    if best is None:
        return [head, Para("No configuration has a validation score, so none can be selected.")]
    title = f"{best.model}, {best.describe()}"
    try:
        cm = confusion(best)
        argmax = confusion(best, use_threshold=False) if cm.threshold is not None else None
    except ResultsError as e:
        return [head, Para(f"Best configuration ({title}): no confusion matrix — {e}")]
    value = best.first["value"]
    shown = _num(value) if pd.notna(value) else f"{MISSING} ({best.first['missing_reason']})"
    if cm.threshold is not None:
        title += f"\nthreshold {cm.threshold:.3f} (Youden's J on validation)"
    path = figures.file(f"confusion_{slug(v.name)}.png")
    return [
        head,
        Para(
            f"Best configuration by validation score: `{best.model}`, {best.describe()} (val "
            f"{_num(best.val_score)}, test {v.metric} {shown}, repeat {int(best.first['repeat'])}). Cells show "
            "counts; colours are normalised per true class. " + _rule_sentence(cm, argmax)
        ),
        figures.image(
            plots.confusion_chart(v.name, title, cm.counts, cm.classes, path),
            f"confusion matrix {v.name}",
        ),
    ]


# The report, in order: a section is a function of the context returning blocks ([] to leave itself out). A new
# section is one function (in its own module when it is more than a few lines) plus one line here.
DATASET_SECTIONS: list[Callable[[DatasetContext], list[Block]]] = [
    dataset_header,
    dataset_table_blocks,
    all_metrics_blocks,
    reference_blocks,
    per_label_blocks,
    per_class_blocks,
    efficiency_blocks,
    curve_blocks,
    confusion_blocks,
    calibration_blocks,
    subgroup_blocks,
    embedding_blocks,
]
REPORT_SECTIONS: list[Callable[[ReportContext], list[Block]]] = [
    title_blocks,
    recommendation_blocks,
    cd_blocks,
    headline_blocks,
    dataset_blocks,
    cost_blocks,
    provenance_blocks,
]

"""Published numbers a user supplies (`fmprobe report --reference FILE`), shown beside the measured ones in each
dataset's section, always marked as not measured here and never read by the recommendation."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fmprobe.errors import FmprobeError
from fmprobe.report.analysis import DatasetView, choose_on_val, suggest
from fmprobe.report.doc import Block, Cell, Heading, Para, Table

COLUMNS = ("dataset", "method", "metric", "value", "source")
FORMAT = (
    "a CSV with the header `dataset,method,metric,value,source` and one published number per line, e.g. "
    "`retinamnist,ResNet-18 (MedMNIST v2),roc_auc,0.717,Yang et al. 2023 Table 3`"
)
NOTE = (
    "**Not measured here.** Published numbers from the reference file, on their authors' splits, preprocessing "
    "and protocols, so not directly comparable; shown for context only and never used by the recommendation. "
    "*ours*: this report's configuration selected on validation, on the same metric where it was recorded."
)


class ReferenceFileError(FmprobeError):
    """A reference file (published numbers) that cannot be read."""


@dataclass(frozen=True)
class ReferenceRow:
    dataset: str
    method: str
    metric: str
    value: float
    source: str
    line: int


def read_reference(path: str | os.PathLike[str], datasets: list[str]) -> tuple[ReferenceRow, ...]:
    """The reference file's rows, every one checked: a bad file is refused naming the file, the line and the fix."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ReferenceFileError(f"reference file {p}: cannot be read ({e}). Give {FORMAT}.") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in reader.fieldnames or []]
    lacking = [c for c in COLUMNS if c not in header]
    if lacking:
        raise ReferenceFileError(
            f"reference file {p}, line 1: the header lacks column(s) {', '.join(lacking)} (it has "
            f"{', '.join(header) or 'nothing'}). Give {FORMAT}."
        )
    reader.fieldnames = header
    filled = [(reader.line_num, rec) for rec in reader if any(str(v or "").strip() for v in rec.values())]
    rows = [_row(p, line, rec, datasets) for line, rec in filled]
    if not rows:
        raise ReferenceFileError(f"reference file {p} has a header but no rows. Give {FORMAT}.")
    return tuple(rows)


def _row(p: Path, line: int, rec: dict[str, str | None], datasets: list[str]) -> ReferenceRow:
    where = f"reference file {p}, line {line}"
    values = {c: (rec.get(c) or "").strip() for c in COLUMNS}
    empty = [c for c, v in values.items() if not v]
    if empty:
        raise ReferenceFileError(
            f"{where}: empty {', '.join(empty)}. Every line needs a dataset, method, metric, value and the source "
            "the number comes from (paper, table, URL)."
        )
    try:
        value = float(values["value"])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ReferenceFileError(
            f"{where}: value {values['value']!r} is not a number. Write it as the metric is recorded here, a plain "
            "decimal such as 0.912 (not 91.2%)."
        )
    if values["dataset"] not in datasets:
        raise ReferenceFileError(
            f"{where}: dataset {values['dataset']!r} is not in these results. {suggest(values['dataset'], datasets)}"
            f"Use one of: {', '.join(datasets)}."
        )
    return ReferenceRow(values["dataset"], values["method"], values["metric"], value, values["source"], line)


def _ours(rows: pd.DataFrame, view: DatasetView, metric: str) -> str:
    """This report's value of ``metric`` for the configuration chosen on validation (its lowest repeat)."""
    best = choose_on_val(view.at(view.table_fraction), view.metric, by=None).get("")
    if best is None:
        return "n/a (no configuration has a validation score)"
    mine = rows[(rows["cell_id"] == best.first["cell_id"]) & (rows["metric"] == metric)]
    if mine.empty or math.isnan(float(mine["value"].iloc[0])):
        return f"n/a (not recorded for {best.model})"
    r = mine.iloc[0]
    ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if math.isfinite(float(r["ci_low"])) else ""
    return f"{r['value']:.3f}{ci} ({best.model}, {best.probe})"


def reference_table(reference: tuple[ReferenceRow, ...], rows: pd.DataFrame, view: DatasetView) -> list[Block]:
    """The dataset's published numbers beside ours; [] when the reference file has none for it."""
    mine = [r for r in reference if r.dataset == view.name]
    if not mine:
        return []
    body = [[Cell(r.method), Cell(r.metric), Cell(f"{r.value:.3f}"), Cell(_ours(rows, view, r.metric)), Cell(r.source)]
            for r in mine]  # fmt: skip
    table = Table(["method (published)", "metric", "published value", "ours", "source"], body, name="reference")
    return [Heading("Published numbers (not measured here)", 3), Para(NOTE), table]

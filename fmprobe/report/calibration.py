"""The report's calibration section: expected calibration error of each backbone's configuration chosen on
validation, and a reliability diagram (:mod:`fmprobe.metrics.calibration` has the definition).

The ECE is the ``ece`` row of the results table when the cell recorded one; for a table written before fmprobe
recorded it, it is computed here from the cell's predictions file (same definition, same resamples), and the
table says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fmprobe._io import slug
from fmprobe.errors import ResultsError
from fmprobe.metrics import MetricUndefined, bootstrap_ci, ece
from fmprobe.metrics.calibration import N_BINS, Reliability, reliability, top_class
from fmprobe.report import plots
from fmprobe.report.analysis import cell_predictions
from fmprobe.report.doc import MISSING, Block, Cell, Heading, Para, Table
from fmprobe.results import Predictions

if TYPE_CHECKING:
    from fmprobe.report.analysis import Choice
    from fmprobe.report.build import DatasetContext

CALIBRATION_NOTE = (
    f"Expected calibration error (`ece`): the test samples are put in {N_BINS} equal-width bins of their top-class "
    "confidence (the highest class probability); ECE is the sample-weighted mean gap |accuracy − mean confidence| "
    "over the bins (multilabel: each label's binary ECE on its known entries, averaged over labels). 0 is perfectly "
    "calibrated; lower is better. ECE is biased upwards on small test sets (and its bootstrap interval with it, so the "
    "value often sits near the interval's lower end): compare configurations on one test set. The reliability diagram plots, per bin, accuracy against mean confidence (the diagonal is perfect "
    "calibration); multilabel: every known label entry pooled."
)


def _known(pred: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """Top-class confidence and correctness of every scored entry (multilabel: the known entries, pooled)."""
    conf, correct = top_class(pred.y_true, pred.y_score)
    if pred.y_true.ndim == 2:
        known = pred.y_true != -1
        return conf[known], correct[known]
    return conf, correct


def _ece_cell(c: Choice, rows: pd.DataFrame, pred: Predictions, n_bootstrap: int, seed: int) -> tuple[Cell, str]:
    """The recorded ``ece`` row of the cell, else the value computed from its predictions; and where it came from."""
    mine = rows[(rows["cell_id"] == c.first["cell_id"]) & (rows["metric"] == "ece")]
    if not mine.empty:
        r = mine.iloc[-1]
        if pd.isna(r["value"]):
            return Cell(f"n/a ({r['missing_reason']})"), "results table"
        ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if pd.notna(r["ci_low"]) and pd.notna(r["ci_high"]) else ""
        return Cell(f"{r['value']:.3f}", tail=ci), "results table"
    source = "computed from the predictions file (not recorded in the results table)"
    try:
        if n_bootstrap:
            ci = bootstrap_ci(ece, pred.y_true, pred.y_score, n_resamples=n_bootstrap, seed=seed)
            return Cell(f"{ci.estimate:.3f}", tail=f" [{ci.low:.3f}, {ci.high:.3f}]"), source
        return Cell(f"{ece(pred.y_true, pred.y_score):.3f}"), source
    except MetricUndefined as e:
        return Cell(f"n/a ({e.reason})"), source


def reliability_chart(
    dataset: str, curves: dict[str, Reliability], colors: dict[str, tuple[float, ...]], path: Path
) -> Path:
    """Reliability diagram (accuracy vs mean confidence per bin, one line per model, diagonal = calibrated) above
    the share of samples per confidence bin."""
    fig = Figure(figsize=(6.4, 6.0))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ls="--", color="#777777", lw=1, label="perfectly calibrated")
    for model, r in curves.items():
        color = colors.get(model, "#555555")
        filled = r.count > 0
        top.plot(r.confidence[filled], r.accuracy[filled], "o-", color=color, ms=4, lw=1.4,
                 label=f"{model} (ECE {r.ece:.3f})")  # fmt: skip
        bottom.stairs(r.count / max(r.count.sum(), 1), r.edges, color=color, lw=1.2)
    top.set_xlim(0, 1)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("accuracy in bin")
    top.set_title(f"{dataset}: reliability ({N_BINS} bins of top-class confidence)", fontsize=10)
    top.grid(alpha=0.3)
    top.legend(fontsize=7, frameon=False, loc="upper left")
    bottom.set_xlabel("top-class confidence")
    bottom.set_ylabel("share")
    bottom.grid(alpha=0.3)
    return plots._save(fig, path)


def calibration_blocks(d: DatasetContext) -> list[Block]:
    """ECE (95% CI) of each backbone's configuration chosen on validation, and their reliability diagram."""
    if not d.chosen:
        return []
    figures = d.report.figures
    body, curves, sources = [], {}, set()
    for model, c in sorted(d.chosen.items()):
        try:
            pred = cell_predictions(c.first["predictions"]) if c.first["predictions"] else None
        except ResultsError as e:
            body.append([Cell(model), Cell(c.describe()), Cell(f"{MISSING} ({e})")])
            continue
        if pred is None:
            body.append([Cell(model), Cell(c.describe()), Cell(f"{MISSING} (no predictions file)")])
            continue
        cell, source = _ece_cell(c, d.rows, pred, d.report.n_bootstrap, d.report.seed)
        sources.add(source)
        body.append([Cell(model), Cell(c.describe()), cell])
        conf, correct = _known(pred)
        if len(conf):
            curves[model] = reliability(conf, correct)
    caption = (
        "ECE on the test set of each backbone's configuration chosen on validation (lowest repeat), 95% bootstrap "
        f"CI in brackets; source: {'; '.join(sorted(sources)) or 'none'}."
    )
    blocks: list[Block] = [
        Heading("Calibration", 3),
        Para(CALIBRATION_NOTE),
        Table(["backbone", "configuration", "ece"], body, caption),
    ]
    if curves:
        path = reliability_chart(
            d.view.name, curves, figures.colors, figures.file(f"reliability_{slug(d.view.name)}.png")
        )
        blocks.append(figures.image(path, f"reliability diagram {d.view.name}"))
    return blocks

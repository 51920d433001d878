"""Report sections with every recorded metric and the chosen hyper-parameters, and per-class metrics.

:func:`all_metrics_blocks`: per dataset, one row per backbone and probe, the configuration (readout, resolution,
hyper-parameters) chosen on validation for that pair, every metric its cell recorded with its 95% CI (per-label
``roc_auc[...]`` rows stay in the per-label table), the chosen hyper-parameters read from the row's ``params``.

:func:`per_class_blocks`: single-label datasets, for each backbone's configuration chosen on validation: recall,
precision, F1 and one-vs-rest ROC-AUC per class from its predictions file (:func:`fmprobe.metrics.perclass.per_class`),
with class-stratified bootstrap CIs (the report's resamples and seed).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from fmprobe.errors import ResultsError
from fmprobe.metrics import METRICS, MetricInputError, MetricUndefined
from fmprobe.metrics.perclass import CLASS_METRICS, ClassValue, per_class
from fmprobe.report.analysis import Choice, cell_predictions, choose_on_val
from fmprobe.report.doc import MISSING, Block, Cell, Heading, Para, Table

if TYPE_CHECKING:
    from fmprobe.report.build import DatasetContext


def _num(x: float) -> str:
    return f"{x:.3f}"


def _g(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _span(values: list[Any]) -> str:
    return _g(values[0]) if len(set(values)) == 1 else f"{_g(min(values))}–{_g(max(values))}"


def describe_params(params: str) -> str:
    """A short readable form of a row's chosen hyper-parameters (``params`` JSON): ``C=0.1``, ``k=20 (weighted)``,
    ``T=0.05``, ``rounds=120``, ``expected decoding``, ``threshold=0.312``, ``epoch 7 of 10``; '' when none."""
    try:
        p = json.loads(params) if params else {}
    except (TypeError, ValueError):
        return ""
    if not isinstance(p, dict):
        return ""
    parts = []
    if "C" in p:
        parts.append(f"C={_g(p['C'])}")
    if "k" in p:
        parts.append(f"k={p['k']}" + (f" ({p['voting']})" if p.get("voting") else ""))
    if "temperature" in p:
        parts.append(f"T={_g(p['temperature'])}")
    if "n_estimators" in p:
        rounds = p["n_estimators"]
        parts.append(f"rounds={_span(rounds) if isinstance(rounds, list) and rounds else rounds}")
    if "decoding" in p:
        parts.append(f"{p['decoding']} decoding")
    if isinstance(p.get("youden_threshold"), (int, float)):
        parts.append(f"threshold={p['youden_threshold']:.3f}")
    if "chosen_epoch" in p:
        parts.append(f"epoch {p['chosen_epoch']}" + (f" of {p['epochs_run']}" if "epochs_run" in p else ""))
    if "lr" in p:
        parts.append(f"lr={_g(p['lr'])}")
    return ", ".join(parts)


def _metric_order(names: list[str], primary: str) -> list[str]:
    """Primary first, then the registered metrics in registry order, then the rest (e.g. ``..[argmax]``)."""
    registered = list(METRICS)
    return sorted(names, key=lambda n: (n != primary, registered.index(n) if n in registered else len(registered), n))


def probe_choices(d: DatasetContext) -> list[tuple[Choice, bool]]:
    """Per backbone and probe, the configuration chosen on validation for that pair, and whether it is also the
    backbone's overall choice (``d.chosen``); sorted by backbone, then probe."""
    rows = d.view.at(d.view.table_fraction)
    out = []
    for probe in sorted(rows["probe"].unique()):
        for model, c in choose_on_val(rows[rows["probe"] == probe], d.view.metric).items():
            overall = d.chosen.get(model)
            out.append((c, overall is not None and overall.first["cell_id"] == c.first["cell_id"]))
    return sorted(out, key=lambda t: (t[0].model, t[0].probe))


def _value_cell(r: pd.Series | None, notes: dict[str, int]) -> Cell:
    if r is None:
        return Cell("")
    if pd.isna(r["value"]):
        return Cell(MISSING, note=notes.setdefault(f"{r.name}: {r['missing_reason']}", len(notes) + 1))
    ci = f" [{_num(r['ci_low'])}, {_num(r['ci_high'])}]" if pd.notna(r["ci_low"]) and pd.notna(r["ci_high"]) else ""
    return Cell(_num(r["value"]), tail=ci)


def all_metrics_blocks(d: DatasetContext) -> list[Block]:
    """Every recorded metric (95% CI) of each backbone x probe's validation-chosen configuration, with its
    hyper-parameters."""
    picks = probe_choices(d)
    if not picks:
        return []
    cells = [c.first["cell_id"] for c, _ in picks]
    mine = d.rows[d.rows["cell_id"].isin(cells)]
    shown = [m for m in dict.fromkeys(mine["metric"]) if "[" not in m or m.endswith("[argmax]")]
    metrics = _metric_order(shown, d.view.metric)
    vary = [k for k in ("readout", "resolution") if d.view.rows[k].nunique() > 1]
    notes: dict[str, int] = {}
    body = []
    for c, overall in picks:
        by_metric = mine[mine["cell_id"] == c.first["cell_id"]].drop_duplicates("metric", keep="last")
        by_metric = by_metric.set_index("metric")
        config = " · ".join(
            [c.probe] + [c.readout] * ("readout" in vary) + [f"@{c.resolution}"] * ("resolution" in vary)
        )
        body.append(
            [Cell(c.model, mark="†" if overall else ""), Cell(config), Cell(describe_params(str(c.first["params"]))),
             Cell(_num(c.val_score) if math.isfinite(c.val_score) else MISSING)]
            + [_value_cell(by_metric.loc[m] if m in by_metric.index else None, notes) for m in metrics]
        )  # fmt: skip
    repeats = "" if d.view.rows["repeat"].nunique() == 1 else " (lowest repeat; its hyper-parameters)"
    caption = (
        f"Every metric recorded on the test set{repeats}, 95% bootstrap CI in brackets, for the configuration chosen "
        f"on validation ({d.view.metric}, column `val`) for each backbone and probe; hyper-parameters as chosen on "
        "validation (full set in the results' `params` column). †: the backbone's overall choice. `ece`: expected "
        "calibration error, lower is better."
    )
    header = ["backbone", "probe", "hyper-parameters", "val"] + metrics
    return [Heading("All metrics", 3), Table(header, body, caption, {n: t for t, n in notes.items()})]


def _class_cell(v: ClassValue) -> Cell:
    if v.value is None:
        return Cell(f"n/a ({v.reason})")
    return Cell(_num(v.value), tail=f" [{_num(v.ci_low)}, {_num(v.ci_high)}]" if v.ci_low is not None else "")


def per_class_blocks(d: DatasetContext) -> list[Block]:
    """Recall, precision, F1 and one-vs-rest ROC-AUC per class of each backbone's chosen configuration."""
    if d.view.task == "multilabel" or not d.chosen:
        return []
    n, seed = d.report.n_bootstrap, d.report.seed
    blocks: list[Block] = [Heading("Per class", 3)]
    for model, c in sorted(d.chosen.items()):
        try:
            pred = cell_predictions(c.first["predictions"]) if c.first["predictions"] else None
            if pred is None:
                raise ResultsError("this cell has no predictions file")
            rows = per_class(pred.y_true, pred.y_score, pred.class_names, y_pred=pred.y_pred, n_resamples=n, seed=seed)
        except (ResultsError, MetricInputError, MetricUndefined) as e:
            blocks.append(Para(f"`{model}` ({c.describe()}): no per-class metrics — {e}"))
            continue
        body = [[Cell(r.name), Cell(str(r.support)), Cell(str(r.predicted))] + [_class_cell(r.values[m]) for m in CLASS_METRICS]
                for r in rows]  # fmt: skip
        decoded = " Predicted class: the decoded grade." if pred.y_pred is not None else ""
        caption = (
            f"`{model}`, {c.describe()} (chosen on validation), repeat {int(c.first['repeat'])}: per class on the test "
            f"set; recall = sensitivity, AUC one-vs-rest on the scores.{decoded} "
            + (f"95% class-stratified bootstrap CI ({n} resamples, seed {seed})." if n else "No CIs (0 resamples).")
        )
        blocks.append(Table(["class", "n test", "n predicted", *CLASS_METRICS], body, caption))
    return blocks

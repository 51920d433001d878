"""ROC and precision-recall curves of the recommended configuration and the baseline, per dataset.

Threshold-free pictures of what the AUC summarises, drawn from the per-sample predictions of each configuration's
lowest repeat. Binary: the positive class. Multi-label: the (at most) :data:`MAX_LABELS` labels with the most
positive test entries, one column each, over each label's known entries (``y_true != -1``), as the metrics do.
Multiclass and ordinal: one-vs-rest, macro-averaged (each class's curve interpolated on a common grid and averaged;
the legend's numbers are the mean of the per-class AUCs / average precisions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from fmprobe._io import slug
from fmprobe.errors import ResultsError
from fmprobe.report.analysis import Choice, cell_predictions, choose_on_val
from fmprobe.report.doc import Block, Heading, Para
from fmprobe.report.plots import _save
from fmprobe.results import Predictions

if TYPE_CHECKING:
    from fmprobe.report.build import DatasetContext

MAX_LABELS = 5  # multi-label: the most frequent labels get a column each
GRID = np.linspace(0.0, 1.0, 201)  # common x of one-vs-rest curves before averaging


@dataclass(frozen=True)
class Curve:
    """One line of a panel: ``x``/``y`` and the number in its legend."""

    x: np.ndarray
    y: np.ndarray
    area: float


@dataclass(frozen=True)
class Panel:
    """One target (the positive class, a label, or the one-vs-rest macro average): ROC and PR of every
    configuration, keyed by its legend label."""

    title: str
    roc: dict[str, Curve]
    pr: dict[str, Curve]


def _binary(y: np.ndarray, s: np.ndarray) -> tuple[Curve, Curve] | None:
    """ROC and PR of one binary target; None when it has no positive or no negative."""
    if y.min() == y.max():
        return None
    fpr, tpr, _ = roc_curve(y, s)
    precision, recall, _ = precision_recall_curve(y, s)
    return Curve(fpr, tpr, float(roc_auc_score(y, s))), Curve(recall[::-1], precision[::-1],
                                                               float(average_precision_score(y, s)))  # fmt: skip


def _macro(curves: list[tuple[Curve, Curve]]) -> tuple[Curve, Curve]:
    """One-vs-rest average: each curve interpolated on :data:`GRID` (PR: the best precision at recall >= r)."""
    tpr = np.mean([np.interp(GRID, c.x, c.y) for c, _ in curves], axis=0)
    prec = np.mean([[p.y[p.x >= r].max() for r in GRID] for _, p in curves], axis=0)
    roc_area = float(np.mean([c.area for c, _ in curves]))
    return Curve(GRID, tpr, roc_area), Curve(GRID, prec, float(np.mean([p.area for _, p in curves])))


def targets(task: str, p: Predictions) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(title, y, score) of each binary target the curves are drawn for (see the module docstring)."""
    names = p.class_names
    if task == "binary":
        score = p.y_score[:, -1] if p.y_score.ndim == 2 else p.y_score
        return [(f"{names[-1]} vs {names[0]}" if len(names) > 1 else "positive class", (p.y_true == 1).astype(int),
                 score)]  # fmt: skip
    if task == "multilabel":
        known = p.y_true != -1
        positives = ((p.y_true == 1) & known).sum(axis=0)
        order = sorted(range(p.y_true.shape[1]), key=lambda j: (-positives[j], j))[:MAX_LABELS]
        return [(names[j], p.y_true[known[:, j], j].astype(int), p.y_score[known[:, j], j]) for j in order]
    return [(names[k], (p.y_true == k).astype(int), p.y_score[:, k]) for k in range(p.y_score.shape[1])]


def panels(task: str, predictions: dict[str, Predictions]) -> list[Panel]:
    """The panels of one dataset: one per target, or the one-vs-rest macro average for multiclass / ordinal."""
    per_config = {name: targets(task, p) for name, p in predictions.items()}
    titles = [t for t, _, _ in next(iter(per_config.values()))]
    out = []
    if task in ("binary", "multilabel"):
        for i, title in enumerate(titles):
            roc, pr = {}, {}
            for name, ts in per_config.items():
                if i < len(ts) and ts[i][0] == title and (c := _binary(ts[i][1], ts[i][2])) is not None:
                    roc[name], pr[name] = c
            if roc:
                out.append(Panel(title, roc, pr))
        return out
    roc, pr = {}, {}
    for name, ts in per_config.items():
        curves = [c for _, y, s in ts if (c := _binary(y, s)) is not None]
        if curves:
            roc[name], pr[name] = _macro(curves)
    return [Panel(f"one-vs-rest, macro over {len(titles)} classes", roc, pr)] if roc else []


def _draw(ax: Axes, curves: dict[str, Curve], kind: str, prevalence: float | None) -> None:
    for i, (name, c) in enumerate(curves.items()):
        what = "AUC" if kind == "roc" else "AP"
        ax.plot(c.x, c.y, lw=1.6, ls="-" if i == 0 else "--", label=f"{name}\n{what} {c.area:.3f}")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls=":")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
    else:
        if prevalence is not None:
            ax.axhline(prevalence, color="#999999", lw=0.8, ls=":")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, frameon=False, loc="lower right" if kind == "roc" else "lower left")


def curve_chart(dataset: str, panel_list: list[Panel], prevalences: list[float | None], path: Path) -> Path:
    """ROC (top row) and PR (bottom row) curves, one column per panel."""
    n = len(panel_list)
    fig = Figure(figsize=(max(4.4, 3.6 * n + 0.4), 7.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n, squeeze=False)
    for j, (panel, prevalence) in enumerate(zip(panel_list, prevalences, strict=True)):
        _draw(axes[0, j], panel.roc, "roc", None)
        _draw(axes[1, j], panel.pr, "pr", prevalence)
        axes[0, j].set_title(f"{dataset if j == 0 else ''}\nROC, {panel.title}", fontsize=9)
        axes[1, j].set_title(f"precision-recall, {panel.title}", fontsize=9)
    return _save(fig, path)


def _choice(d: DatasetContext, model: str, readout: str, resolution: int, probe: str) -> Choice | None:
    rows = d.view.at(d.view.table_fraction)
    rows = rows[(rows["model"] == model) & (rows["readout"] == readout) & (rows["resolution"] == resolution)
                & (rows["probe"] == probe)]  # fmt: skip
    return choose_on_val(rows, d.view.metric, by=None).get("")


def _configurations(d: DatasetContext) -> dict[str, Choice]:
    """Legend label -> configuration: the recommended one and the baseline's (same probe when it ran it)."""
    answer = next((a for a in d.report.recommendation.datasets if a.dataset == d.view.name), None)
    baseline = d.report.headline.baseline
    out: dict[str, Choice] = {}
    if answer is not None and answer.chosen is not None:
        c = answer.chosen
        if (choice := _choice(d, c.model, c.readout, c.resolution, c.probe)) is not None:
            out[f"recommended: {c.label()}" + (" (baseline)" if c.model == baseline else "")] = choice
        b = answer.baseline_comparison
        if c.model != baseline and b is not None:
            choice = _choice(d, b.other.model, b.other.readout, b.other.resolution, b.other.probe)
            if choice is not None:
                out[f"baseline: {b.other.label()}"] = choice
    if not any(k.startswith("baseline") or k.endswith("(baseline)") for k in out) and baseline in d.chosen:
        out[f"baseline: {baseline} + {d.chosen[baseline].probe}"] = d.chosen[baseline]
    return out


def curve_blocks(d: DatasetContext) -> list[Block]:
    """The dataset's ROC / PR section (see the module docstring)."""
    v, figures = d.view, d.report.figures
    head = Heading("ROC and precision-recall curves", 3)
    loaded: dict[str, Predictions] = {}
    missing = []
    for name, choice in _configurations(d).items():
        try:
            loaded[name] = cell_predictions(str(choice.first["predictions"]))
        except ResultsError as e:
            missing.append(f"{name}: {e}")
    note = [Para("No curves for " + "; ".join(missing))] if missing else []
    found = panels(v.task, loaded) if loaded else []
    if not found:
        return [head, *note, Para("No configuration has test predictions with both classes present.")] if (
            loaded or missing) else []  # fmt: skip
    prevalences = [None if v.task not in ("binary", "multilabel") else _prevalence(loaded, v.task, p.title)
                   for p in found]  # fmt: skip
    path = curve_chart(v.name, found, prevalences, figures.file(f"curves_{slug(v.name)}.png"))
    what = {"binary": "the positive class", "multilabel": f"the {len(found)} labels with the most positive test "
            "entries (each over its known entries)"}.get(v.task, "one-vs-rest, macro-averaged over the classes "
            "(curves averaged on a common grid; AUC / AP = mean of the per-class values)")  # fmt: skip
    text = (f"Test-set curves of the recommended configuration and the baseline (lowest repeat, train fraction "
            f"{v.table_fraction:g}), for {what}. Legend: ROC-AUC (top) and average precision (bottom); dotted: "
            "chance (PR: the positive rate).")  # fmt: skip
    return [head, Para(text), *note, figures.image(path, f"ROC and PR curves {v.name}")]


def _prevalence(loaded: dict[str, Predictions], task: str, title: str) -> float | None:
    for t, y, _ in targets(task, next(iter(loaded.values()))):
        if t == title and len(y):
            return float(np.mean(y))
    return None

"""The report's PNG plots.

Figures are built with matplotlib's object API on an explicit Agg canvas, never through pyplot: nothing
opens a window, nothing depends on (or changes) the user's global backend, e.g. inside a notebook.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fmprobe._io import atomic_write
from fmprobe.report.analysis import Axis, CurvePoint, Headline

DPI = 110
PALETTE = matplotlib.colormaps["tab10"].colors


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, path: Path) -> Path:
    """Write the PNG atomically (a reader never sees half a plot); no version or date in it: reproducible bytes."""
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None}))
    return path


def model_colors(models: list[str]) -> dict[str, tuple[float, ...]]:
    """One colour per model, the same in every plot of a report (baseline first, so it keeps one colour)."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}


def gain_chart(h: Headline, datasets: list[str], colors: dict[str, tuple[float, ...]], path: Path) -> Path:
    """Grouped bars: relative gain (%) of each model over the baseline per dataset and averaged, 95% CI."""
    groups = datasets + ["mean over datasets"]
    models = h.models
    fig, ax = _figure(max(6.0, 1.3 * len(groups) * max(1, len(models)) ** 0.5 + 2), 4.2)
    width = 0.8 / max(1, len(models))
    x = np.arange(len(groups))
    for i, m in enumerate(models):
        vals, lo, hi = [], [], []
        for d in datasets:
            g = next((g for g in h.gains if g.dataset == d and g.model == m and not g.reason), None)
            vals.append(np.nan if g is None else 100 * g.rel)
            lo.append(np.nan if g is None else 100 * g.rel_low)
            hi.append(np.nan if g is None else 100 * g.rel_high)
        mg = next((mg for mg in h.means if mg.model == m), None)
        vals.append(np.nan if mg is None else 100 * mg.rel)
        lo.append(np.nan if mg is None else 100 * mg.low)
        hi.append(np.nan if mg is None else 100 * mg.high)
        v, lo_a, hi_a = np.array(vals), np.array(lo), np.array(hi)
        err = np.vstack([v - lo_a, hi_a - v])
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(
            pos,
            v,
            width * 0.92,
            color=colors[m],
            label=m,
            yerr=err,
            capsize=3,
            error_kw={"elinewidth": 1, "ecolor": "#333333"},
        )
    ax.axhline(0, color="#444444", lw=0.8)
    ax.set_xticks(x, groups, rotation=15 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center")
    ax.set_ylabel(f"relative gain over {h.baseline} (%)")
    ax.set_title(f"Gain over baseline {h.baseline} (primary metric, 95% paired-bootstrap CI)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="best")
    return _save(fig, path)


_AXES = {  # x label and log base of each data-efficiency panel
    Axis.fraction: ("fraction of training set (log scale)", 10),
    Axis.shots: ("labelled training images per class (log2 scale)", 2),
}


def _efficiency_panel(
    ax: Axes, axis: Axis, curves: dict[str, list[CurvePoint]], colors: dict[str, tuple[float, ...]], baseline: str
) -> None:
    xs: set[float] = set()
    for model, pts in sorted(curves.items()):
        pts = sorted(pts, key=lambda p: p.x)
        x = np.array([p.x for p in pts], dtype=float)
        xs.update(x.tolist())
        mean = np.array([p.mean for p in pts])
        color = colors.get(model, "#555555")
        label = f"{model} (baseline)" if model == baseline else model
        ax.plot(x, mean, "o--" if model == baseline else "o-", color=color, lw=1.6, ms=4, label=label)
        ax.fill_between(x, [p.ci_low for p in pts], [p.ci_high for p in pts], color=color, alpha=0.15, lw=0)
        if any(p.sd > 0 for p in pts):
            ax.errorbar(x, mean, yerr=[p.sd for p in pts], fmt="none", ecolor=color, elinewidth=1, capsize=2)
    xlabel, base = _AXES[axis]
    ax.set_xscale("log", base=base)
    ticks = sorted(xs)
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def efficiency_chart(
    dataset: str,
    metric: str,
    panels: Mapping[Axis | str, dict[str, list[CurvePoint]]],
    colors: dict[str, tuple[float, ...]],
    baseline: str,
    path: Path,
) -> Path:
    """Primary metric vs train fraction (log x) and, when ``panels`` has shot curves, vs shots per class (log2 x),
    side by side; band = mean ± 1.96 sd of one repeat (repeats and test-set bootstrap, see
    ``analysis.repeat_band``), error bars = sd over repeats; baseline dashed. Empty panels are left out."""
    shown = [(Axis(a), c) for a, c in panels.items() if c]
    fig = Figure(figsize=(7.6 if len(shown) < 2 else 12.4, 4.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(1, len(shown)), sharey=True, squeeze=False)[0]
    for ax, (axis, curves) in zip(axes, shown, strict=False):
        _efficiency_panel(ax, axis, curves, colors, baseline)
    axes[0].set_ylabel(f"{metric} (test)")
    fig.suptitle(f"{dataset}: data efficiency", fontsize=10)
    axes[-1].legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def confusion_chart(dataset: str, title: str, cm: np.ndarray, class_names: list[str], path: Path) -> Path:
    """Counts in the cells, colour = row-normalised rate (recall per true class)."""
    k = cm.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.nan_to_num(cm / cm.sum(axis=1, keepdims=True))
    size = min(9.0, 2.8 + 0.55 * k)
    fig, ax = _figure(size + 1.2, size)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{cm[i, j]}",
                ha="center",
                va="center",
                fontsize=9 if k <= 10 else 7,
                color="white" if rates[i, j] > 0.55 else "#1f2328",
            )
    ax.set_xticks(
        range(k),
        class_names,
        rotation=30 if max(map(len, class_names)) > 4 else 0,
        ha="right" if max(map(len, class_names)) > 4 else "center",
    )
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{dataset}\n{title}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    return _save(fig, path)
